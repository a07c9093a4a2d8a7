import { FST_FORK_SAFE_DB_QUERY_TIMEOUT } from '../errors'
import { discard } from '../driver/discard'
import { cancelsOnTimeout, isKnexTimeout, isStatementTimeout, markDisposed, timeoutOf } from '../driver/knex-parts'
import type { CompiledQuery, DriverConnection } from '../driver/types'
import { asTransactionTimeout, closeTimedOutTransaction } from './transaction-timeout'

// A slow query must never stall other requests.
// - Every statement of a query builder or `raw()` without a `.timeout()` of its own gets
//   `queryTimeoutMillis` (see client/fork-safe-runner.ts): on expiry the caller gets
//   FST_FORK_SAFE_DB_QUERY_TIMEOUT at once and the statement is cancelled on the server in the
//   background (cancel.ts). A `.timeout()` of the user's expires as knex makes it, and knex's
//   error becomes the same FST_FORK_SAFE_DB_QUERY_TIMEOUT, still a KnexTimeoutError, without the
//   statement's bound values knex attaches to it.
// - A transaction's own statements (BEGIN, COMMIT, ROLLBACK, SAVEPOINT) bypass knex's runner and
//   have no timeout in knex: against a frozen server a `{ db: { transaction: true } }` route
//   waited forever for its BEGIN. They get the same limit; on expiry the connection is closed
//   (a KILL would need a new connection to the same stuck server), which fails the statement,
//   and with it the transaction, with FST_FORK_SAFE_DB_QUERY_TIMEOUT.
// - Inside a transaction, a timed-out statement of either kind also closes the transaction's
//   connection, so its ROLLBACK does not wait for the KILL (transaction-timeout.ts).

const IN_TRANSACTION = '; its transaction\'s connection was closed, which rolls the transaction back'

/**
 * The error of a statement that outlived the default timeout (it is being cancelled). Inside a
 * transaction (`transaction` is its connection), the connection is closed too.
 */
export function statementExpired (query: CompiledQuery, timeoutMillis: number, transaction?: DriverConnection): Error {
  if (transaction !== undefined) closeTimedOutTransaction(transaction, timeoutMillis)
  const where = transaction === undefined ? '' : IN_TRANSACTION
  return Object.assign(
    new FST_FORK_SAFE_DB_QUERY_TIMEOUT(`the statement did not finish within ${timeoutMillis} ms and was cancelled on the server (KILL QUERY)${where}`),
    { timeout: timeoutMillis, query: query.sql }
  )
}

/**
 * knex's expired-statement error as the plugin's, closing the connection of the transaction it
 * ran in (`transaction`); a statement that was pending on a connection so closed gets the
 * plugin's error too; any other error unchanged.
 */
export function asQueryTimeout (error: unknown, query: CompiledQuery, transaction?: DriverConnection): unknown {
  if (!isKnexTimeout(error) || error instanceof FST_FORK_SAFE_DB_QUERY_TIMEOUT) return asTransactionTimeout(error)
  const timeout = timeoutOf(query)
  if (timeout === undefined || !isStatementTimeout(error, timeout)) return error
  if (transaction !== undefined) closeTimedOutTransaction(transaction, timeout)
  const what = cancelsOnTimeout(query)
    ? 'and was cancelled on the server (KILL QUERY)'
    : 'and was abandoned: it may still run on the server (use .timeout(ms, { cancel: true }) to stop it)'
  const where = transaction === undefined ? '' : IN_TRANSACTION
  return Object.assign(new FST_FORK_SAFE_DB_QUERY_TIMEOUT(`the statement did not finish within ${timeout} ms ${what}${where}`), { timeout, query: query.sql })
}

/**
 * Runs a transaction's own statement `sql` on `connection`, closing the connection if it outlives
 * `timeoutMillis` (`onTimeout` is told first).
 */
export function boundTransactionStatement (connection: DriverConnection, sql: string, timeoutMillis: number, run: () => Promise<unknown>, onTimeout: () => void): Promise<unknown> {
  if (timeoutMillis === 0) return run()
  const timer = setTimeout(() => {
    onTimeout()
    const statement = sql.replace(/;\s*$/, '').split(' ')[0].toUpperCase()
    const outcome = statement === 'COMMIT' ? ' (whether the transaction was committed is unknown)' : ''
    const error = Object.assign(
      new FST_FORK_SAFE_DB_QUERY_TIMEOUT(`the transaction's ${statement} did not finish within ${timeoutMillis} ms; its connection was closed${outcome}`),
      { timeout: timeoutMillis }
    )
    markDisposed(connection, error)
    // mysql2 fails the pending statement with the error.
    discard(connection, error)
  }, timeoutMillis)
  return run().finally(() => clearTimeout(timer))
}
