import { discard } from '../driver/discard'
import { lifetimeLimit } from '../driver/knex-parts'
import { poolOf } from '../driver/tarn-pool'
import type { DialectClient, DriverConnection } from '../driver/types'
import { acquireGuarded, type AcquireHost } from './acquire-guard'
import type { BorrowCheck } from './borrow-check'

// The warm floor must not go stale, nor grow old. The server closes connections idle past its
// `wait_timeout` (8 h by default, often minutes in production), and tarn never re-creates
// `pool.min` by itself, so after a quiet period the first burst would pay for connects again.
// Every quarter of the server's idle limit (read on the pool's first connection), the keeper
// pings the connections that sit idle in the pool at that instant and have been idle at least
// that long, so none stays silent for more than half the limit; it discards those that do not
// answer and opens connections in the background until the pool is back at `pool.min`. It never
// pings a borrowed connection (its ping would queue behind the query, time out, and close the
// socket under it); a query that borrows one while its ping is in flight waits for the answer.
// Idle connections close to their maximum lifetime are replaced the same way. Its timer is
// unref'd and stopped on close.

const MIN_INTERVAL_MILLIS = 250
const MAX_INTERVAL_MILLIS = 5 * 60_000

/** What the keeper needs from its pool's state (the client runtime provides it). */
export interface KeeperHost extends AcquireHost {
  readonly client: DialectClient | undefined
  /** Shutdown has begun: the keeper opens nothing more. */
  readonly closing: boolean
  readonly borrowCheck: BorrowCheck
}

export class IdleKeeper {
  readonly #runtime: KeeperHost
  #timer: NodeJS.Timeout | undefined
  #running = false

  constructor (runtime: KeeperHost) {
    this.#runtime = runtime
  }

  /**
   * Starts keeping idle connections alive for a server that closes them after
   * `waitTimeoutSeconds`, and recycling those near the end of `lifetimeMillis` (if any).
   */
  start (waitTimeoutSeconds: number, lifetimeMillis?: number): number {
    this.stop()
    const limit = Math.min(waitTimeoutSeconds * 1000, lifetimeMillis ?? Number.POSITIVE_INFINITY)
    const interval = Math.min(MAX_INTERVAL_MILLIS, Math.max(MIN_INTERVAL_MILLIS, Math.floor(limit / 4)))
    this.#timer = setInterval(() => { this.#tick(interval).catch(() => {}) }, interval)
    this.#timer.unref()
    return interval
  }

  stop (): void {
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  async #tick (interval: number): Promise<void> {
    const client = this.#runtime.client
    const pool = client === undefined ? undefined : poolOf(client)
    if (this.#running || client === undefined || pool === undefined || this.#runtime.closing) return
    this.#running = true
    const { borrowCheck, log } = this.#runtime
    try {
      // Recycled here, idle, before knex's borrow-time lifetime check would replace them on a
      // request's path (a connect the request would wait for).
      const now = performance.now()
      const retired = new Set<DriverConnection>()
      for (const connection of pool.idleConnections()) {
        const limit = lifetimeLimit(connection)
        if (limit !== undefined && limit - 2 * interval <= now) {
          discard(connection, new Error('connection reached its maximum lifetime'))
          retired.add(connection)
        }
      }
      // Started in one synchronous pass, so each connection is idle as its ping starts.
      const pings = pool.idleConnections()
        .filter((connection) => !retired.has(connection) && borrowCheck.idleFor(connection) >= interval)
        .map((connection) => borrowCheck.pingIdle(connection))
      const silent = (await Promise.all(pings)).filter((answered) => !answered).length
      if (silent > 0) log.debug({ connections: silent }, 'idle connections stopped answering; discarding them')
      // Back up to the warm floor, in the background rather than on a request's path. Discarded
      // connections still sit in the free list until a borrow checks them, so after a discard
      // every free connection is borrowed at once (dead ones are replaced) and returned.
      const discarded = retired.size + silent
      const missing = pool.size.min - (pool.numUsed() + pool.numFree() + pool.numPendingCreates())
      const wanted = discarded > 0 ? Math.max(pool.numFree(), missing) : missing
      if (wanted <= 0) return
      const borrowed = await Promise.allSettled(Array.from({ length: wanted }, () => acquireGuarded(client, this.#runtime, false)))
      for (const result of borrowed) if (result.status === 'fulfilled') await client.releaseConnection(result.value)
    } finally {
      this.#running = false
    }
  }
}
