import { FST_FORK_SAFE_DB_QUERY_TIMEOUT } from '../errors'
import { discard } from '../driver/discard'
import { markDisposed } from '../driver/knex-parts'
import type { DriverConnection } from '../driver/types'

// A statement that times out inside a transaction fails the transaction at once.
// A transaction's ROLLBACK goes on the same connection as the statement that timed out, so it
// queues behind it: behind the KILL QUERY that stops it (a new connection to the server, as slow
// as the server is to accept one), or, with no KILL, behind the whole statement. Its caller, and a
// route's response, waited that long. So when a statement of a transaction times out, its
// connection is closed at once (the KILL, if any, has already started and finishes in the
// background): the server rolls the transaction back when its thread sees the connection gone,
// and can never commit it. From then on the transaction's ROLLBACK succeeds at once without
// being sent, and anything else on it (a statement, a COMMIT, a SAVEPOINT) fails at once with
// FST_FORK_SAFE_DB_QUERY_TIMEOUT naming the timeout that expired.

/** The timeout (ms) that closed each transaction's connection. */
const closedAfter = new WeakMap<DriverConnection, number>()

/**
 * What mysql2 fails the statements pending on the closed connection with. Deliberately not a
 * KnexTimeoutError: knex's runner rewrites the message of any KnexTimeoutError a statement fails
 * with ("Defined query timeout of undefinedms") and copies the bound values onto it. The runner
 * turns it into the plugin's error (`asTransactionTimeout`).
 */
class TransactionClosed extends Error {
  readonly timeoutMillis: number

  constructor (timeoutMillis: number) {
    super(`a statement of this transaction did not finish within ${timeoutMillis} ms; the transaction's connection was closed`)
    this.timeoutMillis = timeoutMillis
  }
}

function transactionFailed (timeoutMillis: number): Error {
  return Object.assign(
    new FST_FORK_SAFE_DB_QUERY_TIMEOUT(`a statement of this transaction did not finish within ${timeoutMillis} ms: its connection was closed and the transaction rolled back`),
    { timeout: timeoutMillis }
  )
}

/** A statement of the transaction on `connection` outlived `timeoutMillis`: the connection is closed, never reused. */
export function closeTimedOutTransaction (connection: DriverConnection, timeoutMillis: number): void {
  if (closedAfter.has(connection)) return
  closedAfter.set(connection, timeoutMillis)
  const reason = new TransactionClosed(timeoutMillis)
  markDisposed(connection, reason)
  discard(connection, reason)
}

/** The error for a statement on a transaction whose connection a timeout closed; undefined if none did. */
export function timedOutTransaction (connection: DriverConnection): Error | undefined {
  const timeoutMillis = closedAfter.get(connection)
  return timeoutMillis === undefined ? undefined : transactionFailed(timeoutMillis)
}

/**
 * How a transaction's own statement (`sql`: BEGIN, COMMIT, ROLLBACK, SAVEPOINT…) settles on a
 * connection a timeout closed: a full ROLLBACK is already done, anything else fails. Undefined
 * when no timeout closed the connection: the statement is sent as usual.
 */
export function settleOnTimedOutTransaction (connection: DriverConnection, sql: string): Promise<void> | undefined {
  const error = timedOutTransaction(connection)
  if (error === undefined) return undefined
  // A ROLLBACK TO SAVEPOINT is not enough: the enclosing transaction is gone too.
  return /^\s*ROLLBACK\s*;?\s*$/i.test(sql) ? Promise.resolve() : Promise.reject(error)
}

/** A statement that was pending on the closed connection gets the plugin's error; any other error unchanged. */
export function asTransactionTimeout (error: unknown): unknown {
  return error instanceof TransactionClosed ? transactionFailed(error.timeoutMillis) : error
}
