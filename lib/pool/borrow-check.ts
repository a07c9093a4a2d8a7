// performance from perf_hooks, not the global: on Node 22 the global is an accessor, a getter call
// on every use (bench:instructions found it on the borrow path).
import { performance } from 'node:perf_hooks'
import { discard } from '../driver/discard'
import { disposedReason } from '../driver/knex-parts'
import { socketOf } from '../driver/mysql2-parts'
import type { DriverConnection } from '../driver/types'
import { connectionState, type ConnectionState } from './connection-state'

// A connection sitting idle in the pool can die without the client noticing: the server's
// `wait_timeout`, a `KILL`, a restart, a NAT that drops idle flows. knex's own validation reads
// only in-memory flags, which stay stale until the event loop has processed the socket's close
// (a FIN can sit unread while a burst of requests borrows connections, or after a stall). So:
//
// - on every borrow (from `checkAfterIdleMillis`, default 0): a socket check with no round
//   trip: let the event loop process the socket events that have already arrived (one turn, two
//   for connections idle over a second), so a FIN or RST is seen, then read the flags. This
//   catches KILL, wait_timeout and restarts, which all close the socket. HikariCP skips its check
//   for connections used in the last 500 ms; with that window a burst right after a KILL was
//   handed a dead connection.
// - from `pingAfterIdleMillis` (30 s): a COM_PING round trip, which also catches peers that
//   vanished silently. A ping costs one network round trip on the request's path (on a distant
//   database, as much as the request's own query), so it is kept for connections idle long
//   enough to have been silently dropped.
// - the idle keeper pings idle connections in the background. A borrower that takes one while
//   its ping is in flight waits for the answer: were it handed the connection, the ping would
//   queue behind its query, time out, and the socket would be closed under the query.

/** What the socket itself says. On a FIN mysql2 only emits 'end'; its own flags follow on 'close', a turn or more later. */
function socketAlive (connection: DriverConnection): boolean {
  const socket = socketOf(connection)
  return disposedReason(connection) === undefined &&
    (socket === undefined || (socket.readableEnded !== true && socket.writable !== false))
}

/** Resolves when the server answers a COM_PING; rejects on error or after `timeoutMillis`. */
export function ping (connection: DriverConnection, timeoutMillis: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(Object.assign(new Error(`ping timed out after ${timeoutMillis} ms`), { code: 'PING_TIMEOUT' })), timeoutMillis)
    connection.ping((error) => {
      clearTimeout(timer)
      if (error) reject(error)
      else resolve()
    })
  })
}

/**
 * Pings `connection`; one that does not answer has its socket closed (so the pool drops it and
 * no later borrow can trust it; the pool's graceful end() would queue COM_QUIT behind the
 * unanswered ping and leave the socket open) before the error is rethrown.
 */
export async function pingOrDiscard (connection: DriverConnection, timeoutMillis: number): Promise<void> {
  try {
    await ping(connection, timeoutMillis)
  } catch (error) {
    discard(connection, error as Error)
    throw error
  }
}

// setImmediate runs once the current poll phase is done: every socket event that epoll had
// reported with the one we are handling (a KILL's reply arrives after the victim's FIN) has
// been processed by then. A close that arrived while the loop was stalled is only read by the
// *next* poll phase, hence a second turn for connections that sat idle long enough for that to
// matter. A second turn on every borrow cost throughput; idle borrows are rare under load, so
// there it costs nothing. Borrows made in the same turn share one setImmediate:
// the turn is the check, and it is the same turn for all of them.
const SECOND_TURN_AFTER_IDLE_MILLIS = 1000

interface Waiting { connection: DriverConnection, resolve: (alive: boolean) => void }

export interface BorrowCheckOptions {
  checkAfterIdleMillis: number
  pingAfterIdleMillis: number
  pingTimeoutMillis: number
  /** The driver's in-memory liveness test (knex's, which would otherwise run alone). */
  looksAlive: (connection: DriverConnection) => boolean
}

/** Not retired (pool/retire.ts) while its check waited. */
function notRetired (state: ConnectionState | undefined): boolean {
  return state?.retired === undefined
}

/** Milliseconds since the record's idle clock started; a connection without one is idle for ever (pinged). */
function idleMillis (state: ConnectionState | undefined): number {
  return state === undefined ? Number.POSITIVE_INFINITY : performance.now() - state.idleSince
}

export class BorrowCheck {
  readonly #options: BorrowCheckOptions
  /** Borrows waiting for the end of this turn, and for the end of the next one. */
  #afterThisTurn: Waiting[] = []
  #afterNextTurn: Waiting[] = []

  constructor (options: BorrowCheckOptions) {
    this.#options = options
  }

  /**
   * Call when a connection is returned to the pool, or verified alive (its idle clock starts at
   * its set-up, see connection-state.ts).
   */
  markIdle (connection: DriverConnection): void {
    const state = connectionState(connection)
    if (state !== undefined) state.idleSince = performance.now()
  }

  /** Milliseconds since the connection was last used or verified. */
  idleFor (connection: DriverConnection): number {
    return idleMillis(connectionState(connection))
  }

  /**
   * Pings a connection that sits idle in the pool (the keeper's check); resolves whether it
   * answered. One that did not has its socket closed; a borrower that took it meanwhile waited.
   */
  pingIdle (connection: DriverConnection): Promise<boolean> {
    const state = connectionState(connection)
    if (state?.pinging !== undefined) return state.pinging
    const answered = pingOrDiscard(connection, this.#options.pingTimeoutMillis).then(
      () => { this.markIdle(connection); return true },
      () => false
    ).finally(() => { if (state !== undefined) state.pinging = undefined })
    if (state !== undefined) state.pinging = answered
    return answered
  }

  /**
   * Whether the check due on `connection` now takes no round trip (no ping, none in flight): at
   * most the socket check's event-loop turns, so it cannot outlast an acquire deadline.
   */
  answersWithoutRoundTrip (connection: DriverConnection): boolean {
    const state = connectionState(connection)
    return state !== undefined && state.pinging === undefined && idleMillis(state) < this.#options.pingAfterIdleMillis
  }

  /**
   * The pool's check as it lends the connection out: true when it may be handed to a query.
   * Synchronous when no check is due (a promise costs every borrow a few microtasks).
   */
  validate (connection: DriverConnection): boolean | Promise<boolean> {
    const state = connectionState(connection)
    // Retired (pool/retire.ts): tarn destroys it instead of lending it.
    if (state?.retired !== undefined) return false
    const inFlight = state?.pinging
    if (inFlight !== undefined) return inFlight.then((answered) => answered && notRetired(state) && this.#options.looksAlive(connection))
    // The record read once per borrow, for the ping in flight and for the idle time.
    const idle = idleMillis(state)
    if (idle >= this.#options.pingAfterIdleMillis) {
      // A dead one: tarn destroys it and opens another within the same acquire deadline.
      return pingOrDiscard(connection, this.#options.pingTimeoutMillis).then(() => notRetired(state), () => false)
    }
    if (idle < this.#options.checkAfterIdleMillis) return true
    return new Promise((resolve) => this.#afterSocketEvents({ connection, resolve }, idle >= SECOND_TURN_AFTER_IDLE_MILLIS))
  }

  #afterSocketEvents (waiting: Waiting, twoTurns: boolean): void {
    if (twoTurns) {
      if (this.#afterNextTurn.push(waiting) === 1) setImmediate(() => setImmediate(() => this.#judge(this.#takeNextTurn())))
      return
    }
    if (this.#afterThisTurn.push(waiting) === 1) setImmediate(() => this.#judge(this.#takeThisTurn()))
  }

  #takeThisTurn (): Waiting[] {
    const waiting = this.#afterThisTurn
    this.#afterThisTurn = []
    return waiting
  }

  #takeNextTurn (): Waiting[] {
    const waiting = this.#afterNextTurn
    this.#afterNextTurn = []
    return waiting
  }

  /** The socket's events have been processed: what it says now is the truth. */
  #judge (waiting: Waiting[]): void {
    for (const { connection, resolve } of waiting) {
      const alive = socketAlive(connection) && this.#options.looksAlive(connection)
      if (!alive) discard(connection, new Error('the server closed the connection'))
      // Retired while its check ran: destroyed (gracefully) rather than lent.
      resolve(alive && notRetired(connectionState(connection)))
    }
  }
}
