import type { ForkSafeTarnPool } from '../driver/tarn-pool'
import type { DriverConnection } from '../driver/types'
import { connectionState, type RetireReason } from './connection-state'

// Retiring a connection takes it out of service for good without breaking what runs on it:
// `refresh()` (a DNS or VIP switch: HikariCP's soft eviction, Rails' `recycle!`), a host that
// answered read-only or not ready, went down, lags, or comes after a host that is back. An idle
// one is destroyed now (out of the free list first: no borrow can take it); a busy one keeps
// its statement, or its transaction to the end, and is destroyed when released, never lent
// again: the mark is in its record, read on release and by the borrow check. The pool is
// refilled to `pool.min` in the background, with connections opened straight into the free list.

export type { RetireReason }

/** Whether `connection` was retired: it must be destroyed, never lent. */
export function isRetired (connection: DriverConnection): boolean {
  return connectionState(connection)?.retired !== undefined
}

/** Marks `connection` retired for `reason`; false when it already was (or has no record). */
function mark (connection: DriverConnection, reason: RetireReason): boolean {
  const state = connectionState(connection)
  if (state === undefined || state.retired !== undefined) return false
  state.retired = reason
  return true
}

/**
 * Retires the connections of `pool` that `which` picks: idle ones are destroyed now, busy ones
 * marked (destroyed on release). Returns how many were newly retired.
 */
export function retireConnections (pool: ForkSafeTarnPool, which: (connection: DriverConnection) => boolean, reason: RetireReason): number {
  let retired = 0
  for (const connection of pool.borrowedConnections()) {
    if (which(connection) && mark(connection, reason)) retired += 1
  }
  retired += pool.destroyIdle((connection) => which(connection) && mark(connection, reason)).length
  return retired
}

/** What refilling needs from the pool's state (the client runtime provides it). */
export interface RefillHost {
  /** Shutdown has begun: nothing more is opened. */
  readonly closing: boolean
}

/**
 * Brings the pool back to its warm floor in the background, one refill at a time: a request
 * made while one runs runs once more after it (the pool may have shrunk meanwhile).
 */
export class Refill {
  readonly #host: RefillHost
  #running: Promise<void> | undefined
  #again = false

  constructor (host: RefillHost) {
    this.#host = host
  }

  /** Starts a refill (or asks the one in flight to run again); resolves once the pool is refilled or cannot be. */
  request (pool: ForkSafeTarnPool): Promise<void> {
    if (this.#running !== undefined) {
      this.#again = true
      return this.#running
    }
    this.#running = this.#run(pool).finally(() => { this.#running = undefined })
    return this.#running
  }

  /** The refill in flight, if any. */
  get running (): Promise<void> | undefined {
    return this.#running
  }

  async #run (pool: ForkSafeTarnPool): Promise<void> {
    do {
      this.#again = false
      if (this.#host.closing || pool.isDestroyed) return
      const missing = pool.size.min - (pool.numUsed() + pool.numFree() + pool.numPendingCreates())
      // A failed connect is reported by the pool's listeners and the breaker; the keeper retries.
      if (missing > 0 && await pool.open(missing) < missing) return
    } while (this.#again)
  }
}

/**
 * Resolves once every one of `connections` has been destroyed by `pool` (or failed to be), or
 * the pool itself was destroyed. Call it before retiring them: tarn reports a destroy later.
 */
export function whenDestroyed (pool: ForkSafeTarnPool, connections: readonly DriverConnection[]): Promise<void> {
  const waiting = new Set(connections)
  if (waiting.size === 0) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      pool.removeListener('destroySuccess', destroyedOne)
      pool.removeListener('destroyFail', destroyedOne)
      pool.removeListener('poolDestroySuccess', done)
      resolve()
    }
    const destroyedOne = (_eventId: number, connection: DriverConnection) => {
      if (waiting.delete(connection) && waiting.size === 0) done()
    }
    pool.on('destroySuccess', destroyedOne)
    pool.on('destroyFail', destroyedOne)
    pool.on('poolDestroySuccess', done)
  })
}
