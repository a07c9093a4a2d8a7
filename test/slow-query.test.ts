import { channel, subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { FastifyInstance } from 'fastify'
import type { Knex } from 'knex'
import forkSafeDb, { channels } from '../lib'
import { perTestUser } from './helpers/database'
import { request } from './helpers/http-client'
import { buildWatchedApp, type WatchedApp } from './helpers/log-watch'

// `slowQueryMillis`: a statement that ran longer logs one warning at its end, with its SQL
// (placeholders, never bound values), its duration, route and request id.

const fixture = perTestUser()
const SLOW = 'slow query: a statement ran longer than slowQueryMillis'
const THRESHOLD_MILLIS = 100

let watched: WatchedApp
let app: FastifyInstance

beforeEach(() => {
  watched = buildWatchedApp()
  app = watched.app
})
afterEach(async () => { await app.close() })

const isSlow = (decorator = 'db') => (line: Record<string, unknown>) => line.msg === SLOW && line.decorator === decorator

test('logs one warning for a statement slower than slowQueryMillis, with its SQL, duration, route and request id', async () => {
  const requestIds: string[] = []
  app.get('/report', async (request) => {
    requestIds.push(request.id)
    return (await request.db.raw('SELECT SLEEP(0.3) AS slept'))[0][0]
  })
  await app.register(forkSafeDb, { connection: fixture.user.url, slowQueryMillis: THRESHOLD_MILLIS })
  await app.listen({ port: 0, host: '127.0.0.1' })

  expect((await request(app, '/report')).status).toBe(200)
  const warning = await watched.line(isSlow())
  expect(warning).toMatchObject({
    level: 40,
    sql: 'SELECT SLEEP(0.3) AS slept',
    route: 'GET /report',
    requestId: requestIds[0],
    thresholdMillis: THRESHOLD_MILLIS,
    host: `${fixture.user.connection.host}:${fixture.user.connection.port}`,
    inTransaction: false
  })
  expect(warning.durationMillis).toBeGreaterThanOrEqual(300)
  expect(typeof warning.connectionId).toBe('number')
  expect(warning).not.toHaveProperty('errorCode')
  // Logged at the statement's end, before its response: exactly one.
  expect(watched.lines().filter(isSlow())).toHaveLength(1)
})

test('answers a not-found handler\'s slow statement, logged with no route and never with its query string', async () => {
  app.setNotFoundHandler(async (request, reply) => {
    await request.db.raw('SELECT SLEEP(0.2) AS slept')
    await reply.code(404).send({ missing: true })
  })
  await app.register(forkSafeDb, { connection: fixture.user.url, slowQueryMillis: THRESHOLD_MILLIS })
  await app.listen({ port: 0, host: '127.0.0.1' })

  const answered = await request(app, '/reset?token=s3cr3t-reset-token')
  expect(answered.status).toBe(404)
  expect(JSON.parse(answered.body)).toEqual({ missing: true })
  const warning = await watched.line(isSlow())
  expect(warning).toMatchObject({ sql: 'SELECT SLEEP(0.2) AS slept' })
  expect(warning).not.toHaveProperty('route')
  // Fastify's own request lines carry the URL (its logger's choice); none of the plugin's does.
  const plugins = watched.lines().filter((line) => line.req === undefined && line.res === undefined)
  expect(JSON.stringify(plugins)).not.toContain('token=')
})

test('never logs a bound value of a slow statement, in any line', async () => {
  const secret = 'hunter2-bound-value-7f3a'
  app.get('/secret', async (request) => (await request.db.raw('select ? as v, sleep(0.3) as slept', [secret]))[0][0])
  await app.register(forkSafeDb, { connection: fixture.user.url, slowQueryMillis: THRESHOLD_MILLIS })
  await app.listen({ port: 0, host: '127.0.0.1' })

  const answered = await request(app, '/secret')
  expect(JSON.parse(answered.body)).toMatchObject({ v: secret })
  expect(await watched.line(isSlow())).toMatchObject({ sql: 'select ? as v, sleep(0.3) as slept' })
  expect(watched.text()).not.toContain(secret)
})

test('scrubs the registration\'s password from a slow statement\'s SQL, where a raw() inlined it', async () => {
  const password = fixture.user.connection.password
  await app.register(forkSafeDb, { connection: fixture.user.url, slowQueryMillis: THRESHOLD_MILLIS })
  await app.ready()
  await app.db.raw(`SELECT SLEEP(0.2) AS slept, '${password}' AS inlined`)
  const warning = await watched.line(isSlow())
  expect(warning.sql).toBe('SELECT SLEEP(0.2) AS slept, \'[redacted]\' AS inlined')
  expect(watched.text()).not.toContain(password)
})

test('logs nothing for statements under the threshold', async () => {
  app.get('/fast', async (request) => {
    await request.db.raw('SELECT 1 AS one')
    return await request.db.raw('SELECT ? AS two', [2])
  })
  await app.register(forkSafeDb, { connection: fixture.user.url, slowQueryMillis: 5_000 })
  await app.listen({ port: 0, host: '127.0.0.1' })
  for (let sent = 0; sent < 5; sent += 1) expect((await request(app, '/fast')).status).toBe(200)
  // Each statement's end was published (and logged if slow) before its response was sent.
  expect(watched.lines().filter((line) => line.msg === SLOW)).toEqual([])
})

test('logs nothing for a registration that leaves it off, next to one that has it on', async () => {
  await app.register(forkSafeDb, { connection: fixture.user.url })
  await app.register(forkSafeDb, { connection: fixture.user.url, decorator: 'reports', slowQueryMillis: THRESHOLD_MILLIS })
  await app.ready()
  const reports = (app as unknown as { reports: Knex }).reports
  // The same slow statement on both, at the same time.
  await Promise.all([app.db.raw('SELECT SLEEP(0.3) AS off'), reports.raw('SELECT SLEEP(0.3) AS watched')])
  const slow = watched.lines().filter((line) => line.msg === SLOW)
  expect(slow.map((line) => [line.decorator, line.sql])).toEqual([['reports', 'SELECT SLEEP(0.3) AS watched']])
  // Outside a request: no route, no request id.
  expect(slow[0]).not.toHaveProperty('route')
  expect(slow[0]).not.toHaveProperty('requestId')
})

test('logs a slow statement that timed out at its timeout, with the timeout\'s code', async () => {
  await app.register(forkSafeDb, { connection: fixture.user.url, slowQueryMillis: THRESHOLD_MILLIS, queryTimeoutMillis: 300 })
  await app.ready()
  await expect(app.db.raw('SELECT SLEEP(5) AS stuck')).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })
  const warning = await watched.line(isSlow())
  expect(warning).toMatchObject({ sql: 'SELECT SLEEP(5) AS stuck', errorCode: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })
  expect(warning.durationMillis).toBeGreaterThanOrEqual(300)
})

test('stops listening to query:end when the last registration with it closes', async () => {
  const queryEnd = channel(channels.queryEnd)
  expect(queryEnd.hasSubscribers).toBe(false)
  await app.register(forkSafeDb, { connection: fixture.user.url, slowQueryMillis: THRESHOLD_MILLIS })
  await app.ready()
  expect(queryEnd.hasSubscribers).toBe(true)
  await app.close()
  expect(queryEnd.hasSubscribers).toBe(false)
})

test('logs a slow statement that held up the app\'s close, once it ends', async () => {
  await app.register(forkSafeDb, { connection: fixture.user.url, slowQueryMillis: THRESHOLD_MILLIS })
  await app.ready()
  const started = new Promise<void>((resolve) => {
    const onStart = () => { unsubscribe(channels.queryStart, onStart); resolve() }
    subscribe(channels.queryStart, onStart)
  })
  // then() sends it (a builder is lazy).
  const draining = app.db.raw('SELECT SLEEP(0.5) AS draining').then((result: Array<Array<{ draining: number }>>) => result[0][0].draining)
  await started
  // close() waits for the statement (knex's destroy drains the pool): it ends during the close.
  await app.close()
  expect(await draining).toBe(0)
  const slow = watched.lines().filter(isSlow())
  expect(slow).toHaveLength(1)
  expect(slow[0]).toMatchObject({ sql: 'SELECT SLEEP(0.5) AS draining' })
})
