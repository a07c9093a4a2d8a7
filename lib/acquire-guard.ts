import type { Knex } from 'knex'
import { FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, FST_FORK_SAFE_DB_POOL_SATURATED } from './errors'

// A full pool, or a database that is down, must fail fast and clearly, not hang. Waiting queries are capped: beyond
// `maxPendingAcquires` a query is rejected at once, so a slow database turns into quick 503s
// instead of a growing queue of requests that will time out anyway. A wait that does time out
// becomes a coded error too; converting it here also keeps knex's runner from attaching the
// statement and its bound values to the error (it does so only for its own KnexTimeoutError).

export interface AcquireGuardOptions {
  decorator: string
  maxPendingAcquires: number
  acquireTimeoutMillis: number
  /** While it is open, a query that finds no free connection fails at once. */
  breaker: { isOpen: () => boolean, unavailable: () => Error }
}

interface PoolCounts {
  max: number
  numFree: () => number
  numUsed: () => number
  numPendingCreates: () => number
  numPendingAcquires: () => number
}

/** No free connection, no room to open one, and the queue is full. */
function saturated (pool: PoolCounts, maxPendingAcquires: number): boolean {
  return pool.numFree() === 0 &&
    pool.numUsed() + pool.numPendingCreates() >= pool.max &&
    pool.numPendingAcquires() >= maxPendingAcquires
}

export function guardAcquire (client: Knex.Client, options: AcquireGuardOptions): void {
  const acquire = client.acquireConnection.bind(client)
  client.acquireConnection = async () => {
    const pool = client.pool as unknown as PoolCounts
    if (pool.numFree() === 0 && options.breaker.isOpen()) throw options.breaker.unavailable()
    if (saturated(pool, options.maxPendingAcquires)) {
      throw new FST_FORK_SAFE_DB_POOL_SATURATED(options.decorator, options.maxPendingAcquires)
    }
    try {
      return await acquire()
    } catch (error) {
      if ((error as Error)?.name !== 'KnexTimeoutError') throw error
      throw new FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT(options.decorator, options.acquireTimeoutMillis, { cause: error })
    }
  }
}
