import {
  FST_FORK_SAFE_DB_CONNECT_REFUSED, FST_FORK_SAFE_DB_CONNECT_TIMEOUT, FST_FORK_SAFE_DB_CONNECTION_LOST,
  FST_FORK_SAFE_DB_DEADLOCK, FST_FORK_SAFE_DB_LOCK_WAIT_TIMEOUT
} from '../errors'

// A database that cannot be reached, or a connection lost under a statement, is not a bug in the
// app: a client or load balancer should see a 503 it may retry, with a code saying which case it
// is, not the driver's raw 500. The driver's errors are told apart here, and nowhere else:
// - while connecting: no answer in time (ETIMEDOUT), or refused (ECONNREFUSED, or the socket
//   reset or closed during the handshake). No statement was sent: safe to retry;
// - while a statement ran: the connection was lost (mysql2's PROTOCOL_CONNECTION_LOST, a reset,
//   a broken pipe...). The statement may have taken effect: the message says what is known;
// - a deadlock (1213) or a lock-wait timeout (1205): the server's own words are kept (already
//   sanitized by query/sanitize-error.ts), coded, retryable.
// The new error keeps the driver's `errno`, `sqlState` and `sqlMessage`, and the driver error as
// `cause`. Anything else (and the plugin's own errors) passes through unchanged.

type DriverError = Error & { code?: unknown, errno?: unknown, sqlState?: unknown, sqlMessage?: unknown }

/**
 * Losses, as Node and mysql2 name them, and the server's last words before it closes a
 * connection (killed by an administrator, or shutting down).
 */
const LOST = new Set(['PROTOCOL_CONNECTION_LOST', 'ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ETIMEDOUT', 'ER_CONNECTION_KILLED', 'ER_SERVER_SHUTDOWN'])
const ER_LOCK_DEADLOCK = 1213
const ER_LOCK_WAIT_TIMEOUT = 1205

// Not `instanceof Error`: Node's socket errors come from another realm where the code runs in
// a vm context (Jest's), and a driver's error is recognised by its fields anyway.
function driverError (error: unknown): DriverError | undefined {
  if (typeof error !== 'object' || error === null || typeof (error as DriverError).message !== 'string') return undefined
  const { code } = error as DriverError
  return typeof code === 'string' && code.startsWith('FST_') ? undefined : error as DriverError
}

/** Copies what a handler may match on, and the driver error as `cause`. */
function coded<T extends Error> (error: T, from: DriverError): T {
  for (const field of ['errno', 'sqlState', 'sqlMessage'] as const) {
    if (from[field] !== undefined) Object.assign(error, { [field]: from[field] })
  }
  return error
}

/** A failure to open a connection, coded: timed out, or refused. Any other error unchanged. */
export function classifyConnectError (error: unknown, decorator: string): unknown {
  const from = driverError(error)
  const code = from?.code
  if (from === undefined || typeof code !== 'string') return error
  if (code === 'ETIMEDOUT') return coded(new FST_FORK_SAFE_DB_CONNECT_TIMEOUT(decorator, code, { cause: from }), from)
  if (code === 'ECONNREFUSED') return coded(new FST_FORK_SAFE_DB_CONNECT_REFUSED(decorator, code, { cause: from }), from)
  if (LOST.has(code)) return coded(new FST_FORK_SAFE_DB_CONNECT_REFUSED(decorator, `${code} during the handshake`, { cause: from }), from)
  return error
}

/**
 * A statement's failure, coded when the connection was lost under it, or it lost a deadlock or
 * waited too long for a lock. `sql` is the statement (its first word tells a COMMIT apart).
 */
export function classifyStatementError (error: unknown, decorator: string, sql?: string): unknown {
  const from = driverError(error)
  if (from === undefined) return error
  if (from.errno === ER_LOCK_DEADLOCK) return coded(new FST_FORK_SAFE_DB_DEADLOCK(from.message, { cause: from }), from)
  if (from.errno === ER_LOCK_WAIT_TIMEOUT) return coded(new FST_FORK_SAFE_DB_LOCK_WAIT_TIMEOUT(from.message, { cause: from }), from)
  if (typeof from.code !== 'string' || !LOST.has(from.code)) return error
  const [what, outcome] = outcomeOf(sql)
  return coded(new FST_FORK_SAFE_DB_CONNECTION_LOST(decorator, `(${from.code}) while ${what} ran; ${outcome}`, { cause: from }), from)
}

/** What ran, and what is known of its outcome when its connection is lost. */
function outcomeOf (sql: string | undefined): [string, string] {
  const verb = /^\s*(\w+)/.exec(sql ?? '')?.[1]?.toUpperCase()
  if (verb === 'COMMIT') return ['the transaction\'s COMMIT', 'whether the transaction was committed is unknown']
  // The server rolls back a transaction whose connection closes before its COMMIT.
  if (verb === 'BEGIN' || verb === 'START' || verb === 'ROLLBACK' || verb === 'SAVEPOINT' || verb === 'RELEASE') {
    return [`the transaction's ${verb}`, 'the transaction was not committed']
  }
  return ['a statement', 'whether the statement took effect is unknown']
}
