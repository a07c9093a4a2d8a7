import { inspect } from 'node:util'
import forkSafeDb from '../lib'
import { buildApp, simulatePid, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { TcpProxy } from '../support/tcp-proxy'

const fixture = perTestUser()

let logged: LoggedApp

beforeEach(() => { logged = buildApp() })
afterEach(async () => { await logged.app.close() })

test('writes nothing to the console through a whole lifecycle, warnings included', async () => {
  const written: string[] = []
  const spies = [
    ...(['log', 'info', 'warn', 'error', 'debug', 'trace'] as const).map((method) =>
      jest.spyOn(console, method).mockImplementation((...args: unknown[]) => { written.push(args.join(' ')) })),
    jest.spyOn(process.stdout, 'write').mockImplementation((chunk) => { written.push(String(chunk)); return true }),
    jest.spyOn(process.stderr, 'write').mockImplementation((chunk) => { written.push(String(chunk)); return true })
  ]
  try {
    const app = logged.app
    app.get('/broken', async (request) => request.db.raw('SELEC 1'))
    // A server that refuses the first warm-up makes knex and the plugin warn; allowColdStart carries on.
    await app.register(forkSafeDb, { connection: { ...fixture.user.connection, password: 'wrong' }, allowColdStart: true })
    await app.ready()
    // knex warns (in every 3.x) about a builder made without a table.
    ;(app.db as unknown as () => unknown)()
    // The refused warm-up left the connect breaker open: a coded 503, not a console line.
    expect((await app.inject('/broken')).json()).toMatchObject({ statusCode: 503, code: 'FST_FORK_SAFE_DB_UNAVAILABLE' })

    const restorePid = simulatePid(process.pid + 100_000)
    try {
      // A new pid's pool: its first connect is refused, coded, with the driver's error as its cause.
      await expect(app.db.raw('SELECT 1')).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_UNAVAILABLE', cause: expect.objectContaining({ code: 'ER_ACCESS_DENIED_ERROR' }) })
      await app.close()
    } finally {
      restorePid()
    }
  } finally {
    for (const spy of spies) spy.mockRestore()
  }
  expect(written).toEqual([])
  const lines = logged.lines()
  // knex's own warning arrived as a pino line of the plugin's child logger.
  expect(lines.find((line) => line.source === 'knex' && String(line.msg).includes('without a tableName'))).toMatchObject({ plugin: 'fastify-fork-safe-db', level: 40 })
  expect(lines.some((line) => String(line.msg).startsWith('process id changed'))).toBe(true)
})

test('keeps every password out of util.inspect of the decorators and their connections', async () => {
  const app = logged.app
  app.get('/', async (request) => inspect(request.db, { depth: 12 }))
  await app.register(forkSafeDb, { connection: fixture.user.url })
  await app.ready()
  const shown = [
    inspect(app.db, { depth: 12 }),
    inspect(app.db.client.pool, { depth: 8 }),
    (await app.inject('/')).body
  ]
  expect(shown.join('\n')).toContain(fixture.user.user)
  // Deep enough to reach the pooled mysql2 connections' own configs.
  expect(shown[0]).toContain('ConnectionConfig')
  for (const text of shown) {
    expect(text).not.toContain(fixture.user.password)
    expect(text).not.toContain(encodeURIComponent(fixture.user.password))
  }
})

test('logs the warm-up with the connection described without its password', async () => {
  await logged.app.register(forkSafeDb, { connection: fixture.user.url })
  await logged.app.ready()
  const warmed = logged.lines().find((line) => line.msg === 'connection pool warmed')
  expect(warmed).toMatchObject({ connections: 2, connection: `${fixture.user.user}@${fixture.user.connection.host}:${fixture.user.connection.port}/${fixture.user.connection.database}` })
  expect(logged.text()).not.toContain(fixture.user.password)
})

test('sends mysql2\'s "packets out of order" warning to the logger only, not also to the console', async () => {
  const target = new URL(fixture.user.url)
  const proxy = await TcpProxy.start({ target: { host: target.hostname, port: Number(target.port) } })
  const written: string[] = []
  const spy = jest.spyOn(console, 'error').mockImplementation((...args: unknown[]) => { written.push(args.join(' ')) })
  try {
    await logged.app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), pool: { min: 1, max: 1 } })
    await logged.app.ready()
    proxy.misorderOnQuery = /misordered_reply/
    await expect(logged.app.db.raw('SELECT 1 AS misordered_reply')).resolves.toBeDefined()
  } finally {
    spy.mockRestore()
    await logged.app.close()
    await proxy.close()
  }
  expect(logged.lines().find((line) => line.source === 'mysql2')).toMatchObject({ level: 40, msg: 'mysql2 warning', err: expect.objectContaining({ message: expect.stringContaining('packets out of order') }) })
  expect(written).toEqual([])
})
