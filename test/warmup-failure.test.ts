import { inspect } from 'node:util'
import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { freePort } from '../support/private-server'
import { TcpProxy } from '../support/tcp-proxy'

const fixture = perTestUser()

let logged: LoggedApp

beforeEach(() => { logged = buildApp() })
afterEach(async () => { await logged.app.close() })

test('rejects ready() with FST_FORK_SAFE_DB_WARMUP_FAILED and the driver error as cause when the password is wrong', async () => {
  const wrongPassword = `${fixture.user.password}-wrong`
  await logged.app.register(forkSafeDb, { connection: { ...fixture.user.connection, password: wrongPassword } })
  const error = await logged.app.ready().then(() => undefined, (error: unknown) => error)
  expect(error).toMatchObject({
    code: 'FST_FORK_SAFE_DB_WARMUP_FAILED',
    statusCode: 503,
    cause: expect.objectContaining({ code: 'ER_ACCESS_DENIED_ERROR' })
  })
  const everything = [inspect(error, { depth: 10, showHidden: true }), JSON.stringify(error), logged.text()].join('\n')
  expect(everything).toContain('ER_ACCESS_DENIED_ERROR')
  expect(everything).not.toContain(wrongPassword)
})

test('does not put the password of a connection URL into the error or the logs', async () => {
  const wrongPassword = `${fixture.user.password}-url`
  const url = fixture.user.url.replace(encodeURIComponent(fixture.user.password), encodeURIComponent(wrongPassword))
  await logged.app.register(forkSafeDb, { connection: url })
  const error = await logged.app.ready().then(() => undefined, (error: unknown) => error)
  expect(error).toMatchObject({ code: 'FST_FORK_SAFE_DB_WARMUP_FAILED' })
  const everything = [inspect(error, { depth: 10, showHidden: true }), logged.text()].join('\n')
  expect(everything).not.toContain(wrongPassword)
  expect(everything).not.toContain(url)
})

test('rejects ready() with the connect error as cause when nothing listens at the address', async () => {
  const port = await freePort()
  await logged.app.register(forkSafeDb, { connection: { ...fixture.user.connection, port } })
  await expect(logged.app.ready()).rejects.toMatchObject({
    code: 'FST_FORK_SAFE_DB_WARMUP_FAILED',
    cause: expect.objectContaining({ code: 'ECONNREFUSED' })
  })
})

test('starts with a cold pool and a logged warning when allowColdStart is set and warm-up fails', async () => {
  const port = await freePort()
  await logged.app.register(forkSafeDb, { connection: { ...fixture.user.connection, port }, allowColdStart: true })
  await logged.app.ready()
  const warning = logged.lines().find((line) => line.level === 40 && String(line.msg).startsWith('warm-up failed'))
  expect(warning).toMatchObject({ err: expect.objectContaining({ code: 'FST_FORK_SAFE_DB_WARMUP_FAILED' }) })
  // The failed warm-up left the connect breaker open: the query fails at once, the refusal as its cause.
  await expect(logged.app.db.raw('SELECT 1')).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_UNAVAILABLE', cause: expect.objectContaining({ code: 'ECONNREFUSED' }) })
})

test('closes the connections it did open when warm-up fails part way, without waiting for close()', async () => {
  // The server lets this user hold one connection: the first opens, the second is refused.
  await fixture.database.admin.query('ALTER USER ?@\'%\' WITH MAX_USER_CONNECTIONS 1', [fixture.user.user])
  await logged.app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 2, max: 2 } })
  await expect(logged.app.ready()).rejects.toMatchObject({
    code: 'FST_FORK_SAFE_DB_WARMUP_FAILED',
    cause: expect.objectContaining({ code: 'ER_USER_LIMIT_REACHED' })
  })
  expect(await fixture.database.settledCount(fixture.user.user, 0)).toBe(0)
})

describe('a warm-up that is interrupted', () => {
  let proxy: TcpProxy
  beforeEach(async () => {
    const target = new URL(fixture.user.url)
    proxy = await TcpProxy.start({ target: { host: target.hostname, port: Number(target.port) }, delayMillis: 50 })
  })
  afterEach(async () => { await proxy.close() })

  /** Settles with what `promise` did, or 'pending' after `millis`. */
  async function within (millis: number, promise: PromiseLike<unknown>): Promise<string> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<string>((resolve) => { timer = setTimeout(() => resolve('pending'), millis) })
    try {
      return await Promise.race([Promise.resolve(promise).then(() => 'resolved', () => 'rejected'), late])
    } finally {
      clearTimeout(timer)
    }
  }

  test('rejects ready() promptly and leaves no connection when one connect fails while another is still opening', async () => {
    // The third connection is refused while the second is still in its (slow) handshake.
    proxy.refuseWhen = (n) => n === 3
    await logged.app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), pool: { min: 4, max: 4 }, warmupConcurrency: 2 })
    expect(await within(3000, logged.app.ready())).toBe('rejected')
    expect(await fixture.database.settledCount(fixture.user.user, 0)).toBe(0)
  })

  test('lets db.destroy() during warm-up finish without waiting for the acquire timeout', async () => {
    await logged.app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), pool: { min: 4, max: 4, acquireTimeoutMillis: 5000 }, warmupConcurrency: 1 })
    const ready = Promise.resolve(logged.app.ready())
    ready.catch(() => {})
    // Warm-up holds its first connection and is opening the second.
    while (proxy.accepted < 2) await new Promise((resolve) => setTimeout(resolve, 10))
    const started = performance.now()
    await logged.app.db.destroy()
    expect(performance.now() - started).toBeLessThan(1500)
    expect(await within(1000, ready)).not.toBe('pending')
  })
})
