import type { Knex } from 'knex'
import { FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, FST_FORK_SAFE_DB_POOL_SATURATED } from '../errors'

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
  /** A query got a connection after `waitMillis`; `cold` when the connection was opened for it. */
  onAcquired: (waitMillis: number, cold: boolean) => void
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

/**
 * Guards `client.acquireConnection` (what queries and transactions borrow through) and returns
 * the same guarded acquire for the plugin's own borrows (warm-up, keeper, health check), which
 * are not recorded: they are not a query waiting.
 */
export function guardAcquire (client: Knex.Client, options: AcquireGuardOptions): () => Promise<unknown> {
  const acquire = client.acquireConnection.bind(client)
  // A connection no one has borrowed yet was opened for the borrower that gets it: a cold
  // acquire. Warm-up and the keeper borrow what they open, so their connections never count.
  const borrowed = new WeakSet<object>()
  const guarded = async (record: boolean) => {
    const pool = client.pool as unknown as PoolCounts
    if (pool.numFree() === 0 && options.breaker.isOpen()) throw options.breaker.unavailable()
    if (saturated(pool, options.maxPendingAcquires)) {
      throw new FST_FORK_SAFE_DB_POOL_SATURATED(options.decorator, options.maxPendingAcquires)
    }
    const started = performance.now()
    try {
      const connection = await acquire() as object
      const fresh = !borrowed.has(connection)
      if (fresh) borrowed.add(connection)
      if (record) options.onAcquired(performance.now() - started, fresh)
      return connection
    } catch (error) {
      if ((error as Error)?.name !== 'KnexTimeoutError') throw error
      throw new FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT(options.decorator, options.acquireTimeoutMillis, { cause: error })
    }
  }
  // Plain arrows, not async ones: no second promise per borrow on the request path.
  client.acquireConnection = () => guarded(true)
  return () => guarded(false)
}
