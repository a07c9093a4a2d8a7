import forkSafeDb from '../lib'
import { ReplicationPair } from '../support/replication-pair'
import { request } from './helpers/http-client'
import { settledConnections, watchedApp, type WatchedApp } from './helpers/replica-app'

// `replicaLagFallback: 'db'`: while the replica lags, the replica registration's queries borrow
// the primary registration's connections (released back to it, counted in its stats, a KILL
// sent to its host), and go back to the replica once it catches up. A name that is no
// registration fails ready() with a coded error.

const CHECK_MILLIS = 200
const PRIMARY_ID = 1
const REPLICA_ID = 2

let pair: ReplicationPair
let watched: WatchedApp | undefined

beforeAll(async () => { pair = await ReplicationPair.start() }, 120_000)
afterAll(async () => { await pair?.close() })
afterEach(async () => {
  await watched?.app.close()
  watched = undefined
  // Each test leaves no connection on either server.
  expect(await settledConnections(pair.primary, 0)).toBe(0)
  expect(await settledConnections(pair.replica, 0)).toBe(0)
  await pair.startReplica()
  await pair.waitForReplica()
})

interface Served { serverId: number, id: number }

async function primaryAndReplica (replicaOptions: Record<string, unknown> = {}): Promise<WatchedApp> {
  watched = watchedApp()
  const { app } = watched
  await app.register(forkSafeDb, { connection: pair.primary.url, pool: { min: 1, max: 4 } })
  await app.register(forkSafeDb, {
    connection: pair.replica.url,
    decorator: 'replica',
    maxReplicaLagSeconds: 5,
    replicaLagCheckMillis: CHECK_MILLIS,
    replicaLagFallback: 'db',
    pool: { min: 2, max: 4 },
    ...replicaOptions
  })
  const served = 'SELECT @@server_id AS serverId, CONNECTION_ID() AS id'
  app.get('/server', async (request) => (await request.replica.raw(served))[0][0])
  app.get('/server-in-transaction', { replica: { transaction: true } }, async (request) => (await request.replica.raw(served))[0][0])
  app.get('/sleep', async (request) => (await request.replica.raw('SELECT SLEEP(30) AS slept'))[0][0])
  await app.listen({ port: 0, host: '127.0.0.1' })
  return watched
}

async function lagging (current: WatchedApp): Promise<void> {
  const before = current.count()
  await pair.stopReplicaSql()
  await pair.primary.query('CREATE TABLE IF NOT EXISTS test.fallback_writes (id INT AUTO_INCREMENT PRIMARY KEY)')
  await pair.primary.query('INSERT INTO test.fallback_writes VALUES ()')
  await current.logged('replica lags behind its primary', before)
}

async function served (current: WatchedApp, path: string): Promise<Served> {
  const answer = await request(current.app, path)
  expect(answer.status).toBe(200)
  return JSON.parse(answer.body) as Served
}

test('runs the replica\'s queries on the primary registration\'s pool while the replica lags, and leaves none of its connections behind', async () => {
  const current = await primaryAndReplica()
  const { app } = current
  expect((await served(current, '/server')).serverId).toBe(REPLICA_ID)
  await lagging(current)

  const primaryBorrowsBefore = app.dbPool.stats().acquireWaitMillis.samples
  const answers = await Promise.all(Array.from({ length: 6 }, async () => served(current, '/server')))
  expect(answers.map((answer) => answer.serverId)).toEqual(Array(6).fill(PRIMARY_ID))
  // Borrowed as the primary's own queries borrow: its stats count them, and they went back to it.
  expect(app.dbPool.stats().acquireWaitMillis.samples - primaryBorrowsBefore).toBe(6)
  const primaryPool = app.dbPool.stats().connections
  expect(primaryPool.used).toBe(0)
  expect(app.replicaPool.stats().connections.used).toBe(0)
  // Every app connection on the primary is one of its own pool's: the fallback kept none.
  expect(await settledConnections(pair.primary, primaryPool.free)).toBe(primaryPool.free)
})

test('a route transaction begun on the replica during a fallback runs on the primary\'s connection', async () => {
  const current = await primaryAndReplica()
  await lagging(current)
  expect((await served(current, '/server-in-transaction')).serverId).toBe(PRIMARY_ID)
  expect(current.app.dbPool.stats().connections.used).toBe(0)
})

test('goes back to the replica once it catches up', async () => {
  const current = await primaryAndReplica()
  await lagging(current)
  expect((await served(current, '/server')).serverId).toBe(PRIMARY_ID)
  const before = current.count()
  await pair.startReplica()
  await current.logged('replica caught up with its primary', before)
  expect((await served(current, '/server')).serverId).toBe(REPLICA_ID)
})

test('sends the KILL for a timed-out statement on a fallback connection to the primary, the connection\'s own host', async () => {
  const current = await primaryAndReplica({ queryTimeoutMillis: 300 })
  await lagging(current)
  const answer = await request(current.app, '/sleep')
  expect(answer.status).toBe(503)
  expect(JSON.parse(answer.body)).toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })
  // KILL QUERY ended the SLEEP on the primary (a KILL sent to the replica would have left it running).
  const sleeping = async () => (await pair.primary.query("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE 'SELECT SLEEP(30)%'"))[0].n
  const deadline = performance.now() + 5000
  while (Number(await sleeping()) > 0 && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25))
  expect(Number(await sleeping())).toBe(0)
})

test('a read-only answer on a fallback connection is the primary registration\'s to act on: its host leaves its rotation', async () => {
  watched = watchedApp()
  const current = watched
  const { app } = current
  await app.register(forkSafeDb, { connection: pair.primary.url, role: 'primary', pool: { min: 1, max: 4 } })
  await app.register(forkSafeDb, {
    connection: pair.replica.url,
    decorator: 'replica',
    maxReplicaLagSeconds: 5,
    replicaLagCheckMillis: CHECK_MILLIS,
    replicaLagFallback: 'db',
    pool: { min: 2, max: 4 }
  })
  app.get('/write', async (request) => { await request.replica.raw('INSERT INTO test.fallback_writes VALUES ()'); return { ok: true } })
  await app.listen({ port: 0, host: '127.0.0.1' })
  await lagging(current)
  await pair.primary.query('SET GLOBAL read_only = 1')
  try {
    const answer = await request(app, '/write')
    expect(answer.status).toBe(503)
    expect(JSON.parse(answer.body)).toMatchObject({ code: 'FST_FORK_SAFE_DB_READ_ONLY' })
    // The primary's host set took its host out (the replica's was told nothing: its host still lags).
    expect(app.dbPool.stats().hosts?.[0]).toMatchObject({ state: 'read-only' })
    expect(app.replicaPool.stats().hosts?.[0]).toMatchObject({ state: 'lagging' })
  } finally {
    await pair.primary.query('SET GLOBAL read_only = 0')
  }
})

describe('a fallback that names no registration', () => {
  test('fails ready() with FST_FORK_SAFE_DB_INVALID_OPTION when no decorator has that name', async () => {
    watched = watchedApp()
    await watched.app.register(forkSafeDb, { connection: pair.replica.url, decorator: 'replica', maxReplicaLagSeconds: 5, replicaLagFallback: 'primary' })
    await expect(watched.app.ready()).rejects.toMatchObject({
      code: 'FST_FORK_SAFE_DB_INVALID_OPTION',
      message: expect.stringContaining('replicaLagFallback must be the decorator of another fastify-fork-safe-db registration on this Fastify instance (or a parent of it), got `primary`: no decorator of that name is registered here')
    })
  })

  test('fails ready() with FST_FORK_SAFE_DB_INVALID_OPTION when the decorator is not one of this plugin\'s', async () => {
    watched = watchedApp()
    watched.app.decorate('cache', { get: () => undefined })
    watched.app.decorate('cachePool', {})
    await watched.app.register(forkSafeDb, { connection: pair.replica.url, decorator: 'replica', maxReplicaLagSeconds: 5, replicaLagFallback: 'cache' })
    await expect(watched.app.ready()).rejects.toMatchObject({
      code: 'FST_FORK_SAFE_DB_INVALID_OPTION',
      message: expect.stringContaining('got `cache`: that decorator is not a fastify-fork-safe-db registration')
    })
  })

  test('fails registration with FST_FORK_SAFE_DB_INVALID_OPTION when it names the registration itself', async () => {
    watched = watchedApp()
    await expect(watched.app.register(forkSafeDb, { connection: pair.replica.url, decorator: 'replica', maxReplicaLagSeconds: 5, replicaLagFallback: 'replica' })).rejects.toMatchObject({
      code: 'FST_FORK_SAFE_DB_INVALID_OPTION',
      message: expect.stringContaining('replicaLagFallback must name another registration than this one, got `replica`')
    })
  })

  test('fails registration with FST_FORK_SAFE_DB_INVALID_OPTION without maxReplicaLagSeconds', async () => {
    watched = watchedApp()
    await expect(watched.app.register(forkSafeDb, { connection: pair.replica.url, decorator: 'replica', replicaLagFallback: 'db' })).rejects.toMatchObject({
      code: 'FST_FORK_SAFE_DB_INVALID_OPTION',
      message: expect.stringContaining('replicaLagFallback needs maxReplicaLagSeconds')
    })
  })

  afterEach(async () => {
    // Nothing was warmed: ready() failed before the pool opened a connection.
    expect(await settledConnections(pair.replica, 0)).toBe(0)
  })
})
