import { inspect } from 'node:util'
import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { freePort } from '../support/private-server'

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
