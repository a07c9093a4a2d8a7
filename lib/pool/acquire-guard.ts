import knex from 'knex'
import { KnexMySql2Client, poolOf, poolSize, type DialectClient, type DriverConnection, type TarnPool } from '../driver/internals'
import type { ClientRuntime } from '../driver/runtime'
import { roundMillis } from './stats'
import { FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, FST_FORK_SAFE_DB_CLOSED, FST_FORK_SAFE_DB_POOL_SATURATED } from '../errors'

// A full pool, or a database that is down, must fail fast and clearly, not hang. Waiting queries
// are capped: beyond `maxPendingAcquires` a query is rejected at once, so a slow database turns
// into quick 503s instead of a growing queue of requests that will time out anyway. A wait that
// does time out becomes FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, still a KnexTimeoutError for code
// written against knex. Every borrow that waited for a connect of its own is counted (cold).

const knexAcquire = KnexMySql2Client.prototype.acquireConnection

/** No free connection, no room to open one, and the queue is full. */
function saturated (pool: TarnPool, maxPendingAcquires: number): boolean {
  return pool.numFree() === 0 &&
    pool.numUsed() + pool.numPendingCreates() >= poolSize(pool).max &&
    pool.numPendingAcquires() >= maxPendingAcquires
}

/**
 * Borrows a connection through knex for `client`. `record`: a query's borrow, counted in the
 * acquire-wait statistics; the plugin's own (warm-up, keeper, health check) are not.
 */
export async function acquireGuarded (client: DialectClient, runtime: ClientRuntime, record: boolean): Promise<DriverConnection> {
  const { decorator, maxPendingAcquires, pool: { acquireTimeoutMillis } } = runtime.options
  if (runtime.tornDown) throw new FST_FORK_SAFE_DB_CLOSED(decorator)
  const pool = poolOf(client)
  if (pool !== undefined) {
    if (pool.numFree() === 0 && runtime.breaker.isOpen()) throw runtime.breaker.unavailable()
    if (saturated(pool, maxPendingAcquires)) throw new FST_FORK_SAFE_DB_POOL_SATURATED(decorator, maxPendingAcquires)
  }
  if (record && runtime.needsLimitsFirst) {
    await runtime.limitsBeforeFirstBorrow(() => acquireGuarded(client, runtime, false), async (connection) => client.releaseConnection(connection))
  }
  const started = performance.now()
  let connection: DriverConnection
  try {
    connection = await knexAcquire.call(client)
  } catch (error) {
    if (!(error instanceof knex.KnexTimeoutError) || error instanceof FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT) throw error
    throw new FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT(decorator, acquireTimeoutMillis, { cause: error })
  }
  // Warm-up and the keeper borrow what they open, so their connections are never cold.
  const cold = !runtime.borrowedBefore.has(connection)
  if (cold) runtime.borrowedBefore.add(connection)
  if (record) {
    const waitMillis = performance.now() - started
    runtime.counters.recordAcquire(waitMillis, cold)
    if (cold) runtime.log.debug({ waitedMillis: roundMillis(waitMillis) }, 'a query waited for a new connection to be opened (cold acquire)')
  }
  return connection
}
