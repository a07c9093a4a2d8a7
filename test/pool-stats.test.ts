import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { FastifyInstance } from 'fastify'
import forkSafeDb, { channels, type PoolReleaseEvent } from '../lib'
import { buildApp, simulatePid, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { TcpProxy } from '../support/tcp-proxy'

// `fastify.dbPool.stats()` must agree with what the server sees, and `check()` must say when
// the database cannot be reached and recover by itself when it can again.

const fixture = perTestUser()
const POLL_MILLIS = 20
const RECOVERY_MILLIS = 3000

let logged: LoggedApp
let app: FastifyInstance

function build (options: Record<string, unknown> = {}): void {
  logged = buildApp()
  app = logged.app
  app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 3, max: 5 }, ...options })
  app.get('/sleep', async (request) => request.db.raw('SELECT SLEEP(0.3) AS sleeping_statement'))
  app.get('/one', async (request) => request.db.raw('SELECT 1'))
}
afterEach(async () => { await app.close() })

async function sleepingStatements (count: number): Promise<void> {
  for (;;) {
    const processes = await fixture.database.processes(fixture.user.user)
    if (processes.filter((process) => process.info?.includes('sleeping_statement') === true).length >= count) return
    await new Promise((resolve) => setTimeout(resolve, POLL_MILLIS))
  }
}

test('reports the warm connections the server sees', async () => {
  build()
  await app.ready()
  const stats = app.dbPool.stats()
  expect(stats).toMatchObject({ pid: process.pid, decorator: 'db', state: 'open', warm: true, rebuilds: 0, budget: undefined })
  expect(stats.connections).toEqual({ used: 0, free: 3, pendingAcquires: 0, pendingCreates: 0, min: 3, max: 5, created: 3, destroyed: 0 })
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(stats.connections.free + stats.connections.used)
})

test('counts connections in use while their statements run', async () => {
  build()
  await app.ready()
  const running = Promise.all([app.inject('/sleep'), app.inject('/sleep')])
  await sleepingStatements(2)
  expect(app.dbPool.stats().connections).toMatchObject({ used: 2, free: 1 })
  await running
  expect(app.dbPool.stats().connections).toMatchObject({ used: 0, free: 3 })
  expect(app.dbPool.stats().acquireWaitMillis.samples).toBe(2)
})

test('counts no cold acquire when the pool was warmed', async () => {
  build()
  await app.ready()
  await Promise.all([app.inject('/one'), app.inject('/one'), app.inject('/one')])
  expect(app.dbPool.stats().coldAcquires.count).toBe(0)
  expect(logged.lines().some((line) => line.msg === 'a query waited for a new connection to be opened (cold acquire)')).toBe(false)
})

test('counts every query that waited for a connect, and logs each at debug level', async () => {
  build({ warmup: false })
  await app.ready()
  await Promise.all([app.inject('/sleep'), app.inject('/sleep'), app.inject('/sleep')])
  const { coldAcquires, acquireWaitMillis } = app.dbPool.stats()
  // Three concurrent slow first queries on an empty pool: none can hand its connection on, so
  // each waited for one opened for it.
  expect(coldAcquires.count).toBe(3)
  expect(coldAcquires.totalWaitMillis).toBeGreaterThan(0)
  expect(coldAcquires.maxWaitMillis).toBeLessThanOrEqual(acquireWaitMillis.max)
  const lines = logged.lines().filter((line) => line.msg === 'a query waited for a new connection to be opened (cold acquire)')
  expect(lines).toHaveLength(3)
  expect(lines[0]).toMatchObject({ level: 20, waitedMillis: expect.any(Number) })
})

test('counts a rebuild after a pid change, and reports the new pid', async () => {
  build()
  await app.ready()
  const inherited = app.db
  const restorePid = simulatePid(process.pid + 100_000)
  try {
    await app.inject('/one')
    expect(app.dbPool.stats()).toMatchObject({ pid: process.pid, rebuilds: 1, warm: false })
    // Closed as the "child" (its own pool), then the abandoned parent pool by hand.
    await app.close()
  } finally {
    restorePid()
    await inherited.destroy()
  }
})

describe('check()', () => {
  let proxy: TcpProxy
  beforeEach(async () => {
    proxy = await TcpProxy.start({ target: { host: fixture.user.connection.host, port: fixture.user.connection.port } })
  })
  afterEach(async () => { await proxy.close() })

  test('is true while the database answers, false while it cannot be reached, and true again after', async () => {
    build({ connection: proxy.urlFor(fixture.user.url), pool: { min: 1, max: 2 } })
    await app.ready()
    expect(await app.dbPool.check()).toBe(true)

    proxy.refuse = true
    proxy.resetAll()
    expect(await app.dbPool.check()).toBe(false)

    proxy.refuse = false
    const deadline = performance.now() + RECOVERY_MILLIS
    let healthy = false
    while (!healthy && performance.now() < deadline) {
      healthy = await app.dbPool.check()
      if (!healthy) await new Promise((resolve) => setTimeout(resolve, POLL_MILLIS))
    }
    expect(healthy).toBe(true)
  })

  // Regression: check() returned a connection that had not answered its ping to the pool.
  test('closes a connection that does not answer its ping, instead of returning it to the pool', async () => {
    // acquireTimeoutMillis 400 gives pings a 200 ms deadline.
    build({ connection: proxy.urlFor(fixture.user.url), pool: { min: 1, max: 1, acquireTimeoutMillis: 400 } })
    await app.ready()
    proxy.delayMillis = 5000
    expect(await app.dbPool.check()).toBe(false)
    // The close reaches the proxy a few event-loop turns later; without the fix it never does.
    const deadline = performance.now() + 1000
    while (proxy.closed === 0 && performance.now() < deadline) await new Promise((resolve) => setImmediate(resolve))
    expect(proxy.closed).toBe(1)
    proxy.delayMillis = 0
    expect(await app.dbPool.check()).toBe(true)
  })

  test('is false once the app is closing', async () => {
    build()
    await app.ready()
    await app.close()
    expect(await app.dbPool.check()).toBe(false)
    expect(app.dbPool.stats().state).toBe('closed')
  })
})

test('keeps counting after db.destroy() and db.initialize() give the client a new pool', async () => {
  build({ pool: { min: 1, max: 2 } })
  await app.ready()
  expect(app.dbPool.stats().connections.created).toBe(1)
  await app.db.destroy()
  app.db.initialize()
  await app.db.raw('SELECT 1')
  expect(app.dbPool.stats().connections).toMatchObject({ created: 2, destroyed: 1, free: 1 })
})

test('reports no held time for a borrow made before anyone listened to pool:release, though an earlier borrow of its connection was timed', async () => {
  build({ pool: { min: 1, max: 1 } })
  await app.ready()
  const releases: PoolReleaseEvent[] = []
  const onRelease = (message: unknown) => { releases.push(message as PoolReleaseEvent) }
  subscribe(channels.poolRelease, onRelease)
  try {
    await app.db.raw('SELECT 1')
    expect(typeof releases[0]?.heldMillis).toBe('number')
    unsubscribe(channels.poolRelease, onRelease)
    // Borrowed (the pool's one connection again) while nobody listens: not timed.
    const trx = await app.db.transaction()
    subscribe(channels.poolRelease, onRelease)
    await trx.commit()
    expect(releases).toHaveLength(2)
    expect(releases[1].connectionId).toBe(releases[0].connectionId)
    expect(releases[1].heldMillis).toBeUndefined()
  } finally {
    unsubscribe(channels.poolRelease, onRelease)
  }
})
