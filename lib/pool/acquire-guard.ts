// performance from perf_hooks, not the global: on Node 22 the global is an accessor, a getter call
// on every use (bench:instructions found it on the borrow path).
import { performance } from 'node:perf_hooks'
import { isAcquireTimeout, poolOf, poolSize, type DialectClient, type DriverConnection, type TarnPool } from '../driver/internals'
import type { ClientRuntime } from '../driver/runtime'
import { connectionState } from './connection-state'
import { lend } from './direct-borrow'
import { roundMillis } from './stats'
import { FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, FST_FORK_SAFE_DB_CLOSED, FST_FORK_SAFE_DB_POOL_SATURATED } from '../errors'
import { classifyConnectError } from '../query/classify-error'

// A full pool, or a database that is down, must fail fast and clearly, not hang. Waiting queries
// are capped: beyond `maxPendingAcquires` a query is rejected at once, so a slow database turns
// into quick 503s instead of a growing queue of requests that will time out anyway. A wait that
// does time out becomes FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, still a KnexTimeoutError for code
// written against knex. Every borrow that waited for a connect of its own is counted (cold).
//
// This is knex's acquireConnection as the plugin needs it, on tarn directly: no async wrapper
// around knex's own (it is on every query's path), and a free connection lent without tarn's
// queue when nothing waits for one (direct-borrow.ts).

/** No free connection, no room to open one, and the queue is full. */
function saturated (pool: TarnPool, maxPendingAcquires: number): boolean {
  return pool.numUsed() + pool.numPendingCreates() >= poolSize(pool).max &&
    pool.numPendingAcquires() >= maxPendingAcquires
}

/**
 * Borrows a connection for `client`. `record`: a query's borrow, counted in the acquire-wait
 * statistics; the plugin's own (warm-up, keeper, health check) are not.
 */
export function acquireGuarded (client: DialectClient, runtime: ClientRuntime, record: boolean): Promise<DriverConnection> {
  const { decorator, maxPendingAcquires } = runtime.options
  const pool = poolOf(client)
  if (runtime.tornDown || pool === undefined) return Promise.reject(new FST_FORK_SAFE_DB_CLOSED(decorator))
  if (pool.numFree() === 0) {
    if (runtime.breaker.isOpen()) return Promise.reject(runtime.breaker.unavailable())
    if (saturated(pool, maxPendingAcquires)) return Promise.reject(new FST_FORK_SAFE_DB_POOL_SATURATED(decorator, maxPendingAcquires))
  }
  if (record && runtime.needsLimitsFirst) {
    return runtime.limitsBeforeFirstBorrow(() => acquireGuarded(client, runtime, false), async (connection) => client.releaseConnection(connection))
      .then(() => borrow(client, pool, runtime, record))
  }
  return borrow(client, pool, runtime, record)
}

function borrow (client: DialectClient, pool: TarnPool, runtime: ClientRuntime, record: boolean): Promise<DriverConnection> {
  const started = performance.now()
  return lend(client, pool, runtime).then(
    (connection) => acquired(runtime, connection, record, started),
    (error: unknown) => { throw acquireFailed(runtime, error) }
  )
}

function acquired (runtime: ClientRuntime, connection: DriverConnection, record: boolean, started: number): DriverConnection {
  // Warm-up and the keeper borrow what they open, so their connections are never cold.
  const state = connectionState(connection)
  const cold = state !== undefined && !state.borrowed
  if (cold) state.borrowed = true
  if (record) {
    const waitMillis = performance.now() - started
    runtime.counters.recordAcquire(waitMillis, cold)
    if (cold) runtime.log.debug({ waitedMillis: roundMillis(waitMillis) }, 'a query waited for a new connection to be opened (cold acquire)')
  }
  return connection
}

/** A wait that timed out, or a connect that failed (a `pool.afterCreate` lost under it too), coded. */
function acquireFailed (runtime: ClientRuntime, error: unknown): unknown {
  const { decorator, pool: { acquireTimeoutMillis } } = runtime.options
  if (!isAcquireTimeout(error)) return classifyConnectError(error, decorator)
  return new FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT(decorator, acquireTimeoutMillis, { cause: error })
}
