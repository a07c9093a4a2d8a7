import type { DriverConnection } from '../driver/types'
import {
  FST_FORK_SAFE_DB_CONNECT_REFUSED, FST_FORK_SAFE_DB_CONNECT_TIMEOUT, FST_FORK_SAFE_DB_CONNECTION_LOST,
  FST_FORK_SAFE_DB_DEADLOCK, FST_FORK_SAFE_DB_LOCK_WAIT_TIMEOUT, FST_FORK_SAFE_DB_NODE_NOT_READY, FST_FORK_SAFE_DB_READ_ONLY
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
// - a server that takes no writes, or a Galera node that serves nothing (see `refusalOf`): the
//   server's answer is coded by `refusedError`, once the caller has decided (hosts/refused-answer.ts).
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
const ER_UNKNOWN_COM_ERROR = 1047
const ER_OPTION_PREVENTS_STATEMENT = 1290
const ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION = 1792
const ER_READ_ONLY_MODE = 1836
// 1290 says "running with the %s option": the option is an argument of the message, so it reads
// the same whatever the server's language. Other options use 1290 too (--secure-file-priv,
// --skip-grant-tables...): those are the statement's fault, not the server's role.
const READ_ONLY_OPTION = /--(super-)?read-only\b/
// 1047 is also the protocol's "Unknown command"; Galera's refusals name WSREP ("WSREP has not yet
// prepared node for application use").
const WSREP = /\bWSREP\b/

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

/**
 * What a server's refusal of a statement says of the server:
 * - `read-only`: it takes no writes (1290 for --read-only or --super-read-only; 1836, InnoDB's
 *   read-only mode, an Aurora reader);
 * - `not-ready`: a Galera node outside the primary component or not synced (1047 from WSREP);
 * - `read-only-transaction`: 1792, a write in a READ ONLY transaction. That is also what a user's
 *   own `START TRANSACTION READ ONLY` (knex's `readOnly: true`) answers to a write: the caller
 *   must ask the server before blaming it.
 * undefined for any other error.
 */
export type Refusal = 'read-only' | 'not-ready' | 'read-only-transaction'

export function refusalOf (error: unknown): Refusal | undefined {
  const from = driverError(error)
  switch (from?.errno) {
    case ER_OPTION_PREVENTS_STATEMENT: return READ_ONLY_OPTION.test(serverMessage(from)) ? 'read-only' : undefined
    case ER_READ_ONLY_MODE: return 'read-only'
    case ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: return 'read-only-transaction'
    case ER_UNKNOWN_COM_ERROR: return WSREP.test(serverMessage(from)) ? 'not-ready' : undefined
    default: return undefined
  }
}

function serverMessage (from: DriverError): string {
  return typeof from.sqlMessage === 'string' ? from.sqlMessage : from.message
}

/**
 * The coded error for a statement the server refused as `verdict`; it names the server by
 * `host:port` (or its socket path), never by its settings.
 */
export function refusedError (error: unknown, verdict: 'read-only' | 'not-ready', decorator: string, connection: DriverConnection): Error {
  const from = driverError(error) ?? { message: String(error) } as DriverError
  const Coded = verdict === 'read-only' ? FST_FORK_SAFE_DB_READ_ONLY : FST_FORK_SAFE_DB_NODE_NOT_READY
  return coded(new Coded(hostLabel(connection), decorator, String(from.errno), { cause: from }), from)
}

/** `host:port`, `[v6]:port` or the socket path a connection was opened to. */
export function hostLabel (connection: DriverConnection): string {
  const { host, port, socketPath } = connection.config as { host?: unknown, port?: unknown, socketPath?: unknown }
  if (typeof socketPath === 'string' && socketPath !== '') return socketPath
  const name = typeof host === 'string' && host !== '' ? host : 'localhost'
  return `${name.includes(':') ? `[${name}]` : name}:${typeof port === 'number' ? port : 3306}`
}
