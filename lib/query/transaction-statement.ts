import { isClosedStateError, socketOf } from '../driver/mysql2-parts'
import { disposedReason } from '../driver/knex-parts'
import type { DriverConnection } from '../driver/types'
import { FST_FORK_SAFE_DB_CONNECTION_LOST } from '../errors'
import { outcomeBeforeCommit, outcomeOfCommit } from './transaction-outcome'

// A transaction's own COMMIT and ROLLBACK on a connection that is gone, or lost under them.
// - A COMMIT on a connection already lost (its socket closed, or mysql2 refusing commands on it)
//   is never written: the transaction is FST_FORK_SAFE_DB_TRANSACTION_ABORTED, without a try.
//   A COMMIT that fails once written is mapped by what its failure says (transaction-outcome.ts).
// - A ROLLBACK on a lost connection has nothing left to do: the server rolls back the
//   transaction of a connection that closes. It succeeds at once, so the transaction's promise
//   keeps the reason it was rolled back for (knex would replace it with the ROLLBACK's failure).
// - A failed BEGIN (or the SET TRANSACTION knex sends before it) is the transaction's outcome:
//   knex rejects the transaction's promise with it directly, and nothing of it ran, so a lost
//   connection or a refusal is FST_FORK_SAFE_DB_TRANSACTION_ABORTED, which `retries` retries. A
//   timed-out BEGIN keeps FST_FORK_SAFE_DB_QUERY_TIMEOUT (transaction-outcome.ts).
// A savepoint's SAVEPOINT, RELEASE and ROLLBACK TO go on as they are: the enclosing transaction decides.

const COMMIT = /^\s*COMMIT\b/i
const FULL_ROLLBACK = /^\s*ROLLBACK\s*;?\s*$/i
/** knex's top-level opening statements (a savepoint's is `SAVEPOINT`). */
const OPENING = /^\s*(?:BEGIN|SET TRANSACTION)\b/i

/** The socket says the connection is gone (a FIN or reset seen), or knex was told not to reuse it. */
function connectionGone (connection: DriverConnection): boolean {
  const socket = socketOf(connection)
  return disposedReason(connection) !== undefined || (socket !== undefined && (socket.readableEnded === true || socket.writable === false))
}

/**
 * How a transaction's own statement `sql` settles without being sent, on a connection already
 * gone; undefined when it is sent as usual.
 */
export function unsentTransactionStatement (connection: DriverConnection, sql: string, decorator: string): Promise<void> | undefined {
  if (!connectionGone(connection)) return undefined
  if (FULL_ROLLBACK.test(sql)) return Promise.resolve()
  if (!COMMIT.test(sql)) return undefined
  const cause = disposedReason(connection) ?? new FST_FORK_SAFE_DB_CONNECTION_LOST(decorator, 'before the transaction\'s COMMIT was sent; the transaction was not committed')
  return Promise.reject(outcomeOfCommit(cause, decorator, false))
}

/**
 * A transaction's own statement failed with `raw` (`coded` is its classified form): a ROLLBACK
 * whose connection is lost succeeded; a BEGIN's or a COMMIT's failure is its transaction's outcome.
 */
export function settleFailedTransactionStatement (raw: unknown, coded: unknown, sql: string, decorator: string): Promise<void> {
  const lost = isClosedStateError(raw) || (coded as { code?: unknown } | null)?.code === 'FST_FORK_SAFE_DB_CONNECTION_LOST'
  if (lost && FULL_ROLLBACK.test(sql)) return Promise.resolve()
  if (COMMIT.test(sql)) return Promise.reject(outcomeOfCommit(coded, decorator, !isClosedStateError(raw)))
  if (OPENING.test(sql)) return Promise.reject(outcomeBeforeCommit(coded, decorator))
  return Promise.reject(coded)
}
