import { isClosedStateError } from '../driver/mysql2-parts'
import { FST_FORK_SAFE_DB_COMMIT_UNKNOWN, FST_FORK_SAFE_DB_TRANSACTION_ABORTED } from '../errors'

// What a failed transaction tells its caller: whether anything of it can have been committed.
// The statements inside a transaction keep their own errors (a handler that catches one sees
// the usual code); the transaction's own outcome (the promise of `db.transaction(fn)`, its
// `executionPromise`, a route transaction's answer) says which of two cases it is:
// - FST_FORK_SAFE_DB_TRANSACTION_ABORTED (`commitSent: false`): nothing was committed, so running
//   it again is safe. The failure came before COMMIT was written: the connection was lost or
//   closed (a lost connection rolls back whatever it had open), the server stopped taking writes
//   (read-only: 1290, 1792, 1836; Galera's 1047), or the server chose it as a deadlock's victim
//   (1213) or gave up waiting for a lock (1205) and rolled it back. A COMMIT *answered* with
//   1213 (a Galera certification failure) or with a read-only or not-ready error is a definite
//   rollback too: the server answered, and it did not commit.
// - FST_FORK_SAFE_DB_COMMIT_UNKNOWN (`commitSent: true`): the COMMIT was written and its answer
//   never came (the connection was lost, or the COMMIT outlived the query timeout and its
//   connection was closed). The server may have committed it: it is never retried.
// A timed-out statement inside the transaction keeps FST_FORK_SAFE_DB_QUERY_TIMEOUT (knex's
// KnexTimeoutError, whose message already says the transaction was rolled back): it is the
// user's own time limit, and code written for knex matches it by class. Anything else (a
// duplicate key, the user's own error) passes through unchanged.

type CodedError = Error & { code?: unknown, errno?: unknown }

/** The plugin's codes (and the server's errnos, before they are coded) that roll a transaction back. */
const ABORTING_CODES = new Set([
  'FST_FORK_SAFE_DB_DEADLOCK', 'FST_FORK_SAFE_DB_LOCK_WAIT_TIMEOUT', 'FST_FORK_SAFE_DB_CONNECTION_LOST',
  'FST_FORK_SAFE_DB_READ_ONLY', 'FST_FORK_SAFE_DB_NODE_NOT_READY'
])
// 1213 deadlock, 1205 lock wait. A read-only or not-ready errno that arrives uncoded is not a
// demotion (hosts/refused-answer.ts let it through: the user's own READ ONLY transaction, a 1290
// for --secure-file-priv, a 1047 that is not WSREP's): the app's own error, not retried.
const ABORTING_ERRNOS = new Set([1213, 1205])
/** A COMMIT that failed this way may have been committed (its connection closed while it ran). */
const UNKNOWN_AT_COMMIT = new Set(['FST_FORK_SAFE_DB_CONNECTION_LOST', 'FST_FORK_SAFE_DB_QUERY_TIMEOUT'])

function fieldsOf (error: unknown): CodedError | undefined {
  return typeof error === 'object' && error !== null ? error as CodedError : undefined
}

function aborts (error: CodedError | undefined): boolean {
  if (error === undefined) return false
  // A statement given to a connection mysql2 already saw fail: the loss came first.
  if (isClosedStateError(error)) return true
  if (typeof error.code === 'string' && ABORTING_CODES.has(error.code)) return true
  return typeof error.errno === 'number' && ABORTING_ERRNOS.has(error.errno)
}

function reasonOf (error: CodedError): string {
  if (typeof error.code === 'string') return error.code
  return isClosedStateError(error) ? 'its connection was already lost' : 'an error'
}

/** Nothing of the transaction was committed; `cause` says why. */
export function transactionAborted (decorator: string, cause: unknown): Error {
  const from = fieldsOf(cause)
  const error = new FST_FORK_SAFE_DB_TRANSACTION_ABORTED(decorator, from === undefined ? 'an error' : reasonOf(from), { cause })
  return Object.assign(error, { commitSent: false })
}

/**
 * The transaction's failure before its COMMIT was sent (the reason it was rolled back), as its
 * outcome: TRANSACTION_ABORTED when the reason guarantees nothing was committed, else unchanged.
 */
export function outcomeBeforeCommit (error: unknown, decorator: string): unknown {
  return aborts(fieldsOf(error)) ? transactionAborted(decorator, error) : error
}

/**
 * A failed COMMIT's error (already coded), as the transaction's outcome. `sent` is false when the
 * COMMIT was never written (its connection was already closed): nothing was committed.
 */
export function outcomeOfCommit (error: unknown, decorator: string, sent: boolean): unknown {
  const from = fieldsOf(error)
  if (!sent) return transactionAborted(decorator, error)
  if (from !== undefined && typeof from.code === 'string' && UNKNOWN_AT_COMMIT.has(from.code)) {
    return Object.assign(new FST_FORK_SAFE_DB_COMMIT_UNKNOWN(decorator, reasonOf(from), { cause: error }), { commitSent: true })
  }
  return aborts(from) ? transactionAborted(decorator, error) : error
}

/** A transaction that failed this way may be run again: nothing of it was committed. */
export function isSafeToRetry (error: unknown): boolean {
  return fieldsOf(error)?.code === 'FST_FORK_SAFE_DB_TRANSACTION_ABORTED'
}
