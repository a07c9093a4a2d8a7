import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { FastifyInstance } from 'fastify'
import forkSafeDb, { channels } from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { TcpProxy } from '../support/tcp-proxy'

// The plugin's one seam for observers: what happens is published on diagnostics_channel
// channels named under the package. These tests subscribe as a user would (by the exported
// names), drive a real server, and read what was published.

const fixture = perTestUser()
// A bound value no context may carry.
const BOUND = 'bound-value-7c1e9a'
const RECOVERY_MILLIS = 3000
const NEVER_MILLIS = 10_000

interface Published { channel: string, event: Record<string, unknown> }

let published: Published[] = []
const listeners = Object.values(channels).map((name) => {
  const listener = (message: unknown) => { published.push({ channel: name, event: message as Record<string, unknown> }) }
  return { name, listener }
})
// Every event of every test, for the check that none carries a secret.
const everything: Published[] = []

beforeAll(() => { for (const { name, listener } of listeners) subscribe(name, listener) })
afterAll(() => { for (const { name, listener } of listeners) unsubscribe(name, listener) })

let app: FastifyInstance | undefined
beforeEach(() => { published = [] })
afterEach(async () => {
  await app?.close()
  app = undefined
  everything.push(...published)
})

function build (options: Record<string, unknown> = {}): FastifyInstance {
  app = buildApp().app
  app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 1 }, ...options })
  app.get('/bound', async (request) => request.db.raw('SELECT ? AS v', [BOUND]))
  app.get('/sleep', async (request) => request.db.raw('SELECT SLEEP(2) AS slow, ? AS v', [BOUND]))
  app.get('/commit', async (request) => request.db.transaction(async (trx) => trx.raw('SELECT ? AS v', [BOUND])))
  app.get('/rollback', async (request) => {
    const trx = await request.db.transaction()
    await trx.raw('SELECT ? AS v', [BOUND])
    await trx.rollback()
    return { rolledBack: true }
  })
  return app
}

function events (name: string): Array<Record<string, unknown>> {
  return published.filter((entry) => entry.channel === name).map((entry) => entry.event)
}

/** Resolves with the first event on `name` that `matches`, published before or after the call. */
async function eventually (name: string, matches: (event: Record<string, unknown>) => boolean = () => true): Promise<Record<string, unknown>> {
  const seen = events(name).find(matches)
  if (seen !== undefined) return seen
  return new Promise((resolve, reject) => {
    // A bound that rules out "never", not a measure of speed.
    const timer = setTimeout(() => {
      unsubscribe(name, listener)
      reject(new Error(`nothing on ${name}; published: ${published.map((entry) => entry.channel).join(', ')}`))
    }, NEVER_MILLIS)
    const listener = (message: unknown) => {
      if (!matches(message as Record<string, unknown>)) return
      clearTimeout(timer)
      unsubscribe(name, listener)
      resolve(message as Record<string, unknown>)
    }
    subscribe(name, listener)
  })
}

test('exports the channel names, frozen, under the package name', () => {
  expect(Object.isFrozen(channels)).toBe(true)
  expect(channels).toMatchObject({ poolAcquire: 'fastify-fork-safe-db:pool:acquire', queryEnd: 'fastify-fork-safe-db:query:end' })
  for (const name of Object.values(channels)) expect(name).toMatch(/^fastify-fork-safe-db:[a-z]+:[a-z]+$/)
})

test('publishes warm-up\'s connect, then a query\'s borrow, start, end and release on one connection', async () => {
  const app = build()
  await app.ready()
  const [connect] = events(channels.poolConnect)
  expect(connect).toMatchObject({ pool: { decorator: 'db', pid: process.pid }, connectionId: expect.any(Number), host: expect.stringMatching(/:\d+$/), connectMillis: expect.any(Number) })
  expect(events(channels.poolAcquire)).toEqual([expect.objectContaining({ internal: true, connectionId: connect.connectionId })])
  published = []

  const response = await app.inject('/bound')
  expect(response.statusCode).toBe(200)
  const order = published.map((entry) => entry.channel)
  expect(order).toEqual([channels.poolAcquire, channels.queryStart, channels.queryEnd, channels.poolRelease])
  const [acquire, start, end, release] = published.map((entry) => entry.event)
  expect(acquire).toMatchObject({ connectionId: connect.connectionId, host: connect.host, internal: false, cold: false, waitMillis: expect.any(Number) })
  expect(acquire).not.toHaveProperty('errorCode')
  expect(start).toMatchObject({ connectionId: connect.connectionId, sql: 'SELECT ? AS v', method: 'raw', inTransaction: false, queryId: expect.any(Number) })
  expect(end).toMatchObject({ queryId: start.queryId, connectionId: connect.connectionId, durationMillis: expect.any(Number) })
  expect(end).not.toHaveProperty('errorCode')
  expect(release).toMatchObject({ connectionId: connect.connectionId, host: connect.host })
})

test('publishes a statement that outlives queryTimeoutMillis: its timeout, its cancel, its end with the code, and its connection destroyed as broken', async () => {
  const app = build({ queryTimeoutMillis: 200 })
  await app.ready()
  const response = await app.inject('/sleep')
  expect(response.json()).toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })
  const [start] = events(channels.queryStart)
  expect(events(channels.queryTimeout)).toEqual([{ pool: start.pool, queryId: start.queryId, connectionId: start.connectionId, timeoutMillis: 200, inTransaction: false }])
  expect(events(channels.queryCancel)).toEqual([{ pool: start.pool, connectionId: start.connectionId, host: expect.stringMatching(/:\d+$/), reason: 'its query timed out' }])
  expect(events(channels.queryEnd)).toEqual([expect.objectContaining({ queryId: start.queryId, errorCode: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })])
  // The next borrow finds the connection marked and replaces it.
  expect((await app.inject('/bound')).statusCode).toBe(200)
  expect(await eventually(channels.poolDestroy, (event) => event.connectionId === start.connectionId)).toMatchObject({ reason: 'broken' })
})

test('publishes a transaction\'s begin and its end, committed or rolled back, with its statements in it', async () => {
  const app = build()
  await app.ready()
  expect((await app.inject('/commit')).statusCode).toBe(200)
  const [begin] = events(channels.transactionBegin)
  expect(begin).toMatchObject({ transactionId: expect.any(Number), nested: false })
  expect(events(channels.transactionEnd)).toEqual([expect.objectContaining({ transactionId: begin.transactionId, outcome: 'committed', durationMillis: expect.any(Number) })])
  expect(events(channels.queryStart)).toEqual([expect.objectContaining({ inTransaction: true })])

  published = []
  expect((await app.inject('/rollback')).statusCode).toBe(200)
  const [second] = events(channels.transactionBegin)
  expect(second.transactionId).not.toBe(begin.transactionId)
  expect(events(channels.transactionEnd)).toEqual([expect.objectContaining({ transactionId: second.transactionId, outcome: 'rolled back' })])
})

test('publishes the failed borrow and the breaker opening when the database cannot be reached, and the breaker closing when it can again', async () => {
  const proxy = await TcpProxy.start({ target: { host: fixture.user.connection.host, port: fixture.user.connection.port } })
  try {
    const app = build({ connection: proxy.urlFor(fixture.user.url) })
    await app.ready()
    proxy.refuse = true
    proxy.resetAll()
    expect(await app.dbPool.check()).toBe(false)
    // The dead connection was discarded; the next borrow must connect, and is refused.
    expect((await app.inject('/bound')).statusCode).toBe(503)
    expect(events(channels.poolAcquire)).toContainEqual(expect.objectContaining({ connectionId: undefined, internal: false, errorCode: expect.stringMatching(/^FST_FORK_SAFE_DB_/) }))
    expect(await eventually(channels.breakerOpen)).toMatchObject({ pool: { decorator: 'db' }, host: expect.any(String), errorCode: expect.any(String) })
    proxy.refuse = false
    const deadline = performance.now() + RECOVERY_MILLIS
    while (!await app.dbPool.check() && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
    expect(await eventually(channels.breakerClose)).toMatchObject({ failedAttempts: expect.any(Number), outageMillis: expect.any(Number) })
    await app.close()
  } finally {
    await proxy.close()
  }
})

test('publishes each connection destroyed as closed when the pool closes', async () => {
  const app = build()
  await app.ready()
  const [connect] = events(channels.poolConnect)
  await app.close()
  expect(events(channels.poolDestroy)).toEqual([expect.objectContaining({ connectionId: connect.connectionId, reason: 'closed' })])
})

test('no event of these tests carried the password, the connection string or a bound value', () => {
  expect(everything.length).toBeGreaterThan(20)
  const text = JSON.stringify(everything)
  expect(text).not.toContain(BOUND)
  expect(text).not.toContain(fixture.user.password)
  expect(text).not.toContain(fixture.user.url)
})
