import type { FastifyBaseLogger } from 'fastify'
import { discard } from '../driver/discard'
import { markDisposed } from '../driver/knex-parts'
import type { DriverConnection } from '../driver/types'
import { FST_FORK_SAFE_DB_QUERY_TIMEOUT } from '../errors'
import { queryCancel, type PoolIdentity } from '../events/channels'
import { cancelTrace, traced } from '../events/tracing'

// Cancelling a statement means a KILL QUERY sent on a separate connection: closing our side of
// the socket would leave the statement running on the server. The caller that gave up must not
// wait for that KILL (against a server that stopped answering it would last a whole connect
// timeout), so it goes on in the background, bounded, and the connection is marked disposed:
// the pool never hands it out again while its statement may still be running. The KILL's
// connection is opened even while the pool is closing (the pool opens no connection of its own
// then, but a statement left running would outlive the process's interest in it). While anyone
// subscribes, each cancel is traced on the `cancel` tracing channel until the KILL is answered
// or given up (events/tracing.ts).

/** The server's "Unknown thread id" answer to a KILL. */
const ER_NO_SUCH_THREAD = 1094

/** The reason a statement that outlived its deadline is cancelled with. */
export const TIMED_OUT = 'its query timed out'

/**
 * What a connection whose KILL could not be sent is closed with. Whatever is still pending on
 * it fails with this: for a timed-out statement that is often the transaction's ROLLBACK, and a
 * bare error there became a 500 where the statement's own timeout is a 503.
 */
function closedWith (reason: string, error: Error): Error {
  if (reason !== TIMED_OUT) return error
  return new FST_FORK_SAFE_DB_QUERY_TIMEOUT(`a statement on this connection timed out and could not be cancelled (${error.message}); the connection was closed`)
}

/** What a canceller needs from its pool: a connection for the KILL, and how long to wait for it. */
export interface CancelHost {
  readonly identity: PoolIdentity
  /** How long a KILL may take before the connection is closed instead. */
  readonly pingTimeoutMillis: number
  /** Opens a connection for the KILL on the host of `target` (also while the pool is closing); undefined when there is no pool. */
  openKillConnection: (target: DriverConnection) => Promise<DriverConnection> | undefined
  /** The KILL for a timed-out statement on `target` could not reach its host (with several hosts, it is taken out). */
  killFailed: (target: DriverConnection, error: unknown) => void
  /** The host a connection is connected to, for the `query:cancel` event. */
  hostLabelOf: (connection: DriverConnection) => string
}

export class QueryCanceller {
  readonly #host: CancelHost
  readonly #log: FastifyBaseLogger
  /** Connections a cancel has already been sent for (a timeout and a hang-up can both ask). */
  readonly #cancelled = new WeakSet<DriverConnection>()

  constructor (host: CancelHost, log: FastifyBaseLogger) {
    this.#host = host
    this.#log = log
  }

  /** Stops the statement running on `connection`; never rejects and never waits for the server. */
  cancel (connection: DriverConnection, reason: string): void {
    if (this.#cancelled.has(connection)) return
    this.#cancelled.add(connection)
    markDisposed(connection, new Error(reason))
    const { threadId } = connection
    if (queryCancel.hasSubscribers) queryCancel.publish({ pool: this.#host.identity, connectionId: threadId, host: this.#host.hostLabelOf(connection), reason })
    if (!cancelTrace.hasSubscribers) {
      this.#kill(connection, reason, () => {}, () => {})
      return
    }
    const context = { pool: this.#host.identity, connectionId: threadId, host: this.#host.hostLabelOf(connection), reason }
    const killed = () => new Promise<void>((resolve, reject) => this.#kill(connection, reason, resolve, reject))
    traced(cancelTrace, context, killed, (traceContext, _value, millis) => { traceContext.durationMillis = millis }).catch(() => {})
  }

  /**
   * Sends the KILL in the background: `done` once it is answered (or there was nothing to kill),
   * `failed` with what the connection was closed with when it is given up.
   */
  #kill (connection: DriverConnection, reason: string, done: () => void, failed: (error: Error) => void): void {
    const { threadId } = connection
    const opening = threadId === null ? undefined : this.#host.openKillConnection(connection)
    if (opening === undefined) {
      discard(connection, new Error(reason))
      done()
      return
    }
    const timeoutMillis = this.#host.pingTimeoutMillis
    let killer: DriverConnection | undefined
    let settled = false
    const giveUp = (error: Error, message: string) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      this.#log.warn({ err: error, reason, cancelTimeoutMillis: timeoutMillis }, message)
      // A statement that outlived its deadline on a host that cannot take a KILL: that host is
      // the one failing (with several hosts, new connections go elsewhere).
      if (reason === TIMED_OUT) this.#host.killFailed(connection, error)
      // Closing the socket at least frees the connection; the statement may run on.
      const closed = closedWith(reason, error)
      discard(connection, closed)
      killer?.destroy()
      failed(closed)
    }
    const timer = setTimeout(() => giveUp(new Error('KILL QUERY did not complete in time'), 'KILL QUERY did not complete in time; closing the connection'), timeoutMillis)
    opening
      .then((opened) => {
        killer = opened
        if (settled) {
          opened.destroy()
          return
        }
        return new Promise<void>((resolve, reject) => {
          opened.query('KILL QUERY ?', [threadId], (error) => { if (error === null) resolve(); else reject(error) })
        })
      })
      .then(() => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        killer?.end()
        done()
      }, (error: unknown) => {
        // No such thread: the statement's connection was already closed (a transaction's is, when
        // its statement times out) and the server ended the thread: nothing is left running.
        if ((error as { errno?: unknown }).errno === ER_NO_SUCH_THREAD && !settled) {
          settled = true
          clearTimeout(timer)
          killer?.end()
          done()
          return
        }
        giveUp(error as Error, 'KILL QUERY failed; closing the connection')
      })
  }
}
