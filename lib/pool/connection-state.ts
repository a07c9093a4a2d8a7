import type { DriverConnection } from '../driver/types'

// What the plugin keeps about each connection of its pool, for the borrow check, the idle keeper
// and the acquire statistics: one record, put on the connection when it is set up (client/connect.ts),
// before the pool ever sees it. Every pool connection then has the same shape, so reading the
// record is one monomorphic property load, and updating the idle clock overwrites a number in
// place. (WeakMaps and a WeakSet did the same job: a hash lookup per read, a fresh heap number
// per write, and ephemeron tables that every garbage collection traces; bench:instructions
// counted them on every borrow and release.)

const STATE = Symbol('fastify-fork-safe-db:connection-state')

/**
 * Why a connection was retired (pool/retire.ts): replaced by `refresh()`, its host answered
 * read-only or not ready, went down, lags, or a preferred host is back (failback).
 */
export type RetireReason = 'refresh' | 'read-only' | 'not-ready' | 'down' | 'lagging' | 'failback'

export interface ConnectionState {
  /** performance.now() when the connection was set up, last returned to the pool, or last verified. */
  idleSince: number
  /** Lent out at least once: a query that borrows one that never was waited for its connect. */
  borrowed: boolean
  /** The idle keeper's ping in flight, and whether it was answered. */
  pinging: Promise<boolean> | undefined
  /** How long its connect took (for the `pool:connect` event). */
  readonly connectMillis: number
  /** Which of the registration's hosts it is connected to (its index in the host list; 0 with one host). */
  readonly hostIndex: number
  /** performance.now() when last lent, recorded only while someone subscribes to `pool:release` (0: not recorded). */
  lentAt: number
  /** Set when retired: never lent again, destroyed now if idle, else when released. */
  retired: RetireReason | undefined
}

type WithState = DriverConnection & { [STATE]?: ConnectionState }

/** Gives a new connection its record, idle from now. */
export function initConnectionState (connection: DriverConnection, connectMillis: number, hostIndex = 0): void {
  ;(connection as WithState)[STATE] = { idleSince: performance.now(), borrowed: false, pinging: undefined, connectMillis, hostIndex, lentAt: 0, retired: undefined }
}

/**
 * How long `connection` has been lent, if its borrow was timed (see `lentAt`); call once, at its
 * release: the time is cleared, so a later borrow that was not timed reports none.
 */
export function heldMillisOf (connection: DriverConnection): number | undefined {
  const state = (connection as WithState)[STATE]
  if (state === undefined || state.lentAt === 0) return undefined
  const lentAt = state.lentAt
  state.lentAt = 0
  return performance.now() - lentAt
}

/** The connection's record; undefined for one the plugin did not set up (never in its pool). */
export function connectionState (connection: DriverConnection): ConnectionState | undefined {
  return (connection as WithState)[STATE]
}
