import type { FastifyBaseLogger } from 'fastify'
import type { Knex } from 'knex'
import { discard, pingOrDiscard } from './borrow-check'

// The warm floor must not go stale, nor grow old. The server closes connections idle past its `wait_timeout`
// (8 h by default, often minutes in production), and tarn never re-creates `pool.min` by
// itself, so after a quiet period the first burst would pay for connects again. Every quarter
// of the server's idle limit (read at warm-up), the keeper pings connections idle for at least
// that long, so none stays silent for more than half the limit; it discards those that do not
// answer and opens connections in the background until the pool is back at `pool.min`. Idle
// connections close to their maximum lifetime are replaced the same way. Its timer is unref'd
// and stopped on close.

const MIN_INTERVAL_MILLIS = 250
const MAX_INTERVAL_MILLIS = 5 * 60_000

interface FreeResource {
  resource: object & {
    ping: (callback: (error: Error | null) => void) => void
    /** Set by knex when pool.maxConnectionLifetimeMillis is: when it expires (performance.now()). */
    __knexLifetimeLimit?: number
  }
}
interface TarnPool {
  min: number
  free: FreeResource[]
  numUsed: () => number
  numFree: () => number
  numPendingCreates: () => number
}

export interface IdleKeeperOptions {
  client: Knex.Client
  /** Borrows a connection without counting as a query's wait. */
  acquire: () => Promise<unknown>
  log: FastifyBaseLogger
  pingTimeoutMillis: number
  /** When the connection was last used or verified (the borrow check's record). */
  idleFor: (connection: object) => number
  markAlive: (connection: object) => void
}

export class IdleKeeper {
  readonly #options: IdleKeeperOptions
  #timer: NodeJS.Timeout | undefined
  #running = false

  constructor (options: IdleKeeperOptions) {
    this.#options = options
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
    if (this.#running) return
    this.#running = true
    const { client, acquire, log, pingTimeoutMillis, idleFor, markAlive } = this.#options
    const pool = client.pool as unknown as TarnPool | undefined
    try {
      if (pool === undefined) return
      let discarded = 0
      // Recycled here, idle, before knex's borrow-time lifetime check would replace them on a
      // request's path (a connect the request would wait for).
      const now = performance.now()
      for (const { resource: connection } of pool.free) {
        if (connection.__knexLifetimeLimit !== undefined && connection.__knexLifetimeLimit - 2 * interval <= now) {
          discard(connection, new Error('connection reached its maximum lifetime'))
          discarded += 1
        }
      }
      const stale = pool.free.map((free) => free.resource).filter((connection) => idleFor(connection) >= interval)
      for (const connection of stale) {
        try {
          await pingOrDiscard(connection, pingTimeoutMillis)
          markAlive(connection)
        } catch (error) {
          log.debug({ err: error }, 'an idle connection stopped answering; discarding it')
          discarded += 1
        }
      }
      // Back up to the warm floor, in the background rather than on a request's path. Discarded
      // connections still sit in the free list until a borrow checks them, so after a discard
      // every free connection is borrowed at once (dead ones are replaced) and returned.
      const missing = pool.min - (pool.numUsed() + pool.numFree() + pool.numPendingCreates())
      const wanted = discarded > 0 ? Math.max(pool.numFree(), missing) : missing
      if (wanted <= 0) return
      const borrowed = await Promise.allSettled(Array.from({ length: wanted }, acquire))
      for (const result of borrowed) if (result.status === 'fulfilled') await client.releaseConnection(result.value)
    } finally {
      this.#running = false
    }
  }
}
