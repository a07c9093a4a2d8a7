import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { createConnection } from 'mysql2'
import forkSafeDb, { channels, type PoolAcquireEvent } from '../lib'
import type { DriverConnection } from '../lib/driver/types'
import { lagOfRows, ReplicaLagReader } from '../lib/hosts/replica-lag'
import { ReplicationPair } from '../support/replication-pair'
import { adminUrl } from './helpers/database'
import { request } from './helpers/http-client'
import { settledConnections, watchedApp, type WatchedApp } from './helpers/replica-app'

// The lag guard against a real primary and GTID replica (support/replication-pair.ts): a replica
// whose SQL thread is stopped while the primary takes writes is taken out of rotation within
// about one check interval (no borrow lands on it, requests get a coded 503), and put back once
// replication runs again.

const CHECK_MILLIS = 200
const DEFAULT_CHECK_MILLIS = 1000

let pair: ReplicationPair
let watched: WatchedApp | undefined

beforeAll(async () => { pair = await ReplicationPair.start() }, 120_000)
afterAll(async () => { await pair?.close() })
afterEach(async () => {
  await watched?.app.close()
  watched = undefined
  // Each test leaves no connection on either server (the pool's and the guard's alike).
  const left = "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE USER IN ('app', 'plain')"
  for (const node of pair.nodes) expect(await settledCount(async () => Number((await node.query(left))[0].n))).toBe(0)
  await pair.startReplica()
  await pair.waitForReplica()
})

async function replicaApp (options: Record<string, unknown> = {}): Promise<WatchedApp> {
  watched = watchedApp()
  const { app } = watched
  await app.register(forkSafeDb, {
    connection: pair.replica.url,
    decorator: 'replica',
    maxReplicaLagSeconds: 5,
    replicaLagCheckMillis: CHECK_MILLIS,
    pool: { min: 2, max: 4 },
    ...options
  })
  app.get('/server', async (request) => (await request.replica.raw('SELECT @@server_id AS serverId'))[0][0])
  await app.listen({ port: 0, host: '127.0.0.1' })
  return watched
}

async function writeOnPrimary (): Promise<void> {
  await pair.primary.query('CREATE TABLE IF NOT EXISTS test.lag_writes (id INT AUTO_INCREMENT PRIMARY KEY)')
  await pair.primary.query('INSERT INTO test.lag_writes VALUES ()')
}

/** The server's lag, read by the plugin's reader on a connection of its own. */
async function readLag (url: string): Promise<number> {
  const connection = createConnection(url) as unknown as DriverConnection
  try {
    return await new ReplicaLagReader().read(connection)
  } finally {
    connection.destroy()
  }
}

describe('reading a server\'s lag', () => {
  test('a server that replicates from nothing reads as 0 (a primary listed among replicas never lags)', async () => {
    expect(await readLag(adminUrl())).toBe(0)
    expect(await readLag(pair.primary.url)).toBe(0)
  })

  test('a replica that applies everything reads as a number of seconds', async () => {
    const lag = await readLag(pair.replica.url)
    expect(Number.isFinite(lag)).toBe(true)
    expect(lag).toBeGreaterThanOrEqual(0)
  })

  test('a replica whose SQL thread is stopped reads as Infinity (not replicating)', async () => {
    await pair.stopReplicaSql()
    expect(await readLag(pair.replica.url)).toBe(Number.POSITIVE_INFINITY)
  })

  test('several channels read as the worst one, and a NULL lag among them as Infinity', () => {
    expect(lagOfRows([{ Seconds_Behind_Master: 3 }, { Seconds_Behind_Master: 12 }, { Seconds_Behind_Master: 0 }])).toBe(12)
    expect(lagOfRows([{ Seconds_Behind_Source: 2 }, { Seconds_Behind_Source: null }])).toBe(Number.POSITIVE_INFINITY)
    expect(lagOfRows([])).toBe(0)
  })
})

describe('the lag guard', () => {
  test('takes a lagging replica out within about one interval: no borrow lands on it, requests get a coded 503, and borrows resume after START REPLICA', async () => {
    const { app, logged, count } = await replicaApp()
    expect((await request(app, '/server')).status).toBe(200)

    const lent: Array<number | null> = []
    const onAcquire = (message: unknown) => {
      const event = message as PoolAcquireEvent
      if (event.pool.decorator === 'replica' && event.connectionId !== undefined) lent.push(event.connectionId)
    }
    const before = count()
    await pair.stopReplicaSql()
    await writeOnPrimary()
    const lagging = await logged('replica lags behind its primary', before)
    expect(lagging).toMatchObject({ host: `127.0.0.1:${pair.replica.port}`, lagSeconds: null, replicating: false, maxReplicaLagSeconds: 5 })

    subscribe(channels.poolAcquire, onAcquire)
    try {
      for (let sent = 0; sent < 5; sent += 1) {
        const answer = await request(app, '/server')
        expect(answer.status).toBe(503)
        expect(answer.headers['retry-after']).toBe('1')
        expect(JSON.parse(answer.body)).toMatchObject({ code: 'FST_FORK_SAFE_DB_REPLICA_LAG' })
        expect(JSON.parse(answer.body).message).toContain(`127.0.0.1:${pair.replica.port}: not replicating`)
      }
      expect(lent).toEqual([])
      // The pool's connections to the replica were closed; only the guard's monitor is left.
      expect(await settledConnections(pair.replica, 1)).toBe(1)
      expect(app.replicaPool.stats().hosts).toEqual([{ host: `127.0.0.1:${pair.replica.port}`, state: 'lagging', lagSeconds: null, connections: 0, inUse: 0, failures: 0 }])

      const caughtUpAfter = count()
      await pair.startReplica()
      await logged('replica caught up with its primary', caughtUpAfter)
      expect((await request(app, '/server')).status).toBe(200)
      expect(lent.length).toBeGreaterThan(0)
      const [host] = app.replicaPool.stats().hosts ?? []
      expect(host).toMatchObject({ state: 'up' })
      expect(typeof host.lagSeconds).toBe('number')
    } finally {
      unsubscribe(channels.poolAcquire, onAcquire)
    }
  })

  test('a replica already lagging at start-up gets no borrow from the first request on', async () => {
    await pair.stopReplicaSql()
    await writeOnPrimary()
    const { app, logged } = await replicaApp()
    await logged('replica lags behind its primary')
    const answer = await request(app, '/server')
    expect(answer.status).toBe(503)
    expect(JSON.parse(answer.body)).toMatchObject({ code: 'FST_FORK_SAFE_DB_REPLICA_LAG' })
  })

  test('a user that may not read the replica status leaves the host in rotation, with a warning', async () => {
    await pair.primary.query("CREATE USER IF NOT EXISTS 'plain'@'%'")
    await pair.primary.query("GRANT SELECT ON test.* TO 'plain'@'%'")
    await pair.waitForReplica()
    const { app, logged } = await replicaApp({ connection: `mysql://plain@127.0.0.1:${pair.replica.port}/test` })
    const warning = await logged('could not read the replica\'s lag')
    expect(warning).toMatchObject({ level: 40, host: `127.0.0.1:${pair.replica.port}`, err: { errno: 1227 } })
    expect((await request(app, '/server')).status).toBe(200)
    expect(app.replicaPool.stats().hosts).toMatchObject([{ host: `127.0.0.1:${pair.replica.port}`, state: 'up' }])
  })

  test('a check on a frozen replica gives up at its deadline and leaves the host as it was', async () => {
    const { app, logged, count } = await replicaApp({ replicaLagCheckMillis: CHECK_MILLIS })
    const before = count()
    await pair.replica.freeze()
    try {
      const warning = await logged('could not read the replica\'s lag', before)
      expect(warning).toMatchObject({ err: { code: 'LAG_CHECK_TIMEOUT', message: 'the replica lag check did not answer within 1000 ms' } })
      expect(app.replicaPool.stats().hosts?.[0]).toMatchObject({ state: 'up' })
    } finally {
      await pair.replica.thaw()
    }
  })

  test('skips a lagging host and serves from the other (the primary listed as a second replica host never lags)', async () => {
    const { app, logged, count } = await replicaApp({ connection: [pair.replica.url, pair.primary.url], hostPolicy: 'sequential' })
    const served = async () => JSON.parse((await request(app, '/server')).body) as { serverId: number }
    expect((await served()).serverId).toBe(2)
    const before = count()
    await pair.stopReplicaSql()
    await writeOnPrimary()
    await logged('replica lags behind its primary', before)
    for (let sent = 0; sent < 4; sent += 1) expect((await served()).serverId).toBe(1)
    expect(app.replicaPool.stats().hosts?.map((host) => host.state)).toEqual(['lagging', 'up'])
  })

  test('measures how long after replication stops a replica gets no new borrows (default interval)', async () => {
    const { app, logged, count } = await replicaApp({ replicaLagCheckMillis: DEFAULT_CHECK_MILLIS })
    expect((await request(app, '/server')).status).toBe(200)
    const before = count()
    const stopped = performance.now()
    await pair.stopReplicaSql()
    await logged('replica lags behind its primary', before)
    const tookOutMillis = performance.now() - stopped
    expect(JSON.parse((await request(app, '/server')).body)).toMatchObject({ code: 'FST_FORK_SAFE_DB_REPLICA_LAG' })
    const refusedMillis = performance.now() - stopped
    const after = count()
    const started = performance.now()
    await pair.startReplica()
    await logged('replica caught up with its primary', after)
    const backMillis = performance.now() - started
    console.log(`replica lag guard, replicaLagCheckMillis ${DEFAULT_CHECK_MILLIS}: taken out ${Math.round(tookOutMillis)} ms after STOP SLAVE SQL_THREAD, first refused request at ${Math.round(refusedMillis)} ms; back in rotation ${Math.round(backMillis)} ms after START SLAVE`)
    // Generous: rules out "never", not "slow" (one interval plus a check's deadline, twice over).
    expect(tookOutMillis).toBeLessThan(4 * DEFAULT_CHECK_MILLIS)
  })
})

/** Polls `count` until 0, bounded: a server ends a closed connection's thread on its own time, with no event. */
async function settledCount (count: () => Promise<number>, timeoutMillis = 5000): Promise<number> {
  const deadline = performance.now() + timeoutMillis
  let current = await count()
  while (current !== 0 && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 25))
    current = await count()
  }
  return current
}
