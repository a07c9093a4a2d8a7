import createError from '@fastify/error'
import knex from 'knex'

// Every error the plugin raises has a stable code, so callers can match on `err.code`
// (or `instanceof` these constructors) instead of parsing messages. The two timeouts are also
// knex's own `KnexTimeoutError`, so code written for stock knex (`instanceof KnexTimeoutError`)
// keeps working.

// knex's class, as @fastify/error takes a base class (its constructor is never called).
const KnexTimeoutError = knex.KnexTimeoutError as unknown as ErrorConstructor
const KNEX_TIMEOUT_NAME = 'KnexTimeoutError'

/**
 * Makes the errors of a constructor built on KnexTimeoutError carry knex's `name` too, as an own
 * enumerable property like knex's (code written for knex tests `err.name === 'KnexTimeoutError'`,
 * and pino logs it), while `code` stays the plugin's. @fastify/error's constructor assigns
 * `this.name = 'FastifyError'`; the setter below receives that assignment and keeps knex's name.
 */
function keepKnexTimeoutName (Constructor: { prototype: object }): void {
  Object.defineProperty(Constructor.prototype, 'name', {
    configurable: true,
    get: () => KNEX_TIMEOUT_NAME,
    set (this: object, value: unknown) {
      Object.defineProperty(this, 'name', { value: value === 'FastifyError' ? KNEX_TIMEOUT_NAME : value, writable: true, enumerable: true, configurable: true })
    }
  })
  // pino's err serializer reports the constructor's name as `type`, as it does for knex's error.
  Object.defineProperty(Constructor, 'name', { value: KNEX_TIMEOUT_NAME, configurable: true })
}

/** An option is missing, has the wrong type or is out of range. Raised at registration. */
export const FST_FORK_SAFE_DB_INVALID_OPTION = createError(
  'FST_FORK_SAFE_DB_INVALID_OPTION',
  'fastify-fork-safe-db: %s',
  500,
  TypeError
)

/** The connection URL or object cannot be used. Raised at registration. */
export const FST_FORK_SAFE_DB_INVALID_CONNECTION = createError(
  'FST_FORK_SAFE_DB_INVALID_CONNECTION',
  'fastify-fork-safe-db: %s',
  500,
  TypeError
)

/** An option that is dangerous by default was set without its explicit opt-in. */
export const FST_FORK_SAFE_DB_UNSAFE_OPTION = createError(
  'FST_FORK_SAFE_DB_UNSAFE_OPTION',
  'fastify-fork-safe-db: %s',
  500,
  TypeError
)

/** A second registration tried to use a decorator name that is already taken. */
export const FST_FORK_SAFE_DB_ALREADY_REGISTERED = createError(
  'FST_FORK_SAFE_DB_ALREADY_REGISTERED',
  'fastify-fork-safe-db: the decorator "%s" is already registered; pass a different `decorator` option to register a second pool',
  500
)

/** Warm-up could not open or verify a connection; `cause` is the driver error. */
export const FST_FORK_SAFE_DB_WARMUP_FAILED = createError(
  'FST_FORK_SAFE_DB_WARMUP_FAILED',
  'fastify-fork-safe-db: could not warm the "%s" pool: %s',
  503
)

/** Every connection is busy and the queue of waiting queries is full: rejected at once. */
export const FST_FORK_SAFE_DB_POOL_SATURATED = createError(
  'FST_FORK_SAFE_DB_POOL_SATURATED',
  'fastify-fork-safe-db: the "%s" pool is saturated (%s queries already waiting for a connection)',
  503
)

/** No connection became free within pool.acquireTimeoutMillis. A `KnexTimeoutError`, named so. */
export const FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT = createError(
  'FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT',
  'fastify-fork-safe-db: no connection of the "%s" pool became free within %s ms',
  503,
  KnexTimeoutError
)
// knex's runner copies a statement and its bound values onto this error: driver/knex-parts.ts
// keeps them off (it is knex's behaviour, so it is named there).
keepKnexTimeoutName(FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT)

/**
 * A statement outlived its `.timeout()` or `queryTimeoutMillis`: it was cancelled on the
 * server (KILL QUERY), or, for a transaction's own BEGIN/COMMIT/ROLLBACK, its connection was
 * closed. A `KnexTimeoutError`, named so; `timeout` is the limit in milliseconds.
 */
export const FST_FORK_SAFE_DB_QUERY_TIMEOUT = createError(
  'FST_FORK_SAFE_DB_QUERY_TIMEOUT',
  'fastify-fork-safe-db: %s',
  503,
  KnexTimeoutError
)
keepKnexTimeoutName(FST_FORK_SAFE_DB_QUERY_TIMEOUT)

/** The database cannot be reached right now; connect attempts are being held back. */
export const FST_FORK_SAFE_DB_UNAVAILABLE = createError(
  'FST_FORK_SAFE_DB_UNAVAILABLE',
  'fastify-fork-safe-db: the database of the "%s" pool cannot be reached right now%s',
  503
)

/**
 * The connection was lost (reset, closed, or a broken pipe) while a statement ran on it: the
 * statement may or may not have taken effect, and the message says which of the two is known.
 * `errno`/`sqlState` are the driver's; `cause` is the driver error.
 */
export const FST_FORK_SAFE_DB_CONNECTION_LOST = createError(
  'FST_FORK_SAFE_DB_CONNECTION_LOST',
  'fastify-fork-safe-db: the connection of the "%s" pool was lost %s',
  503
)

/** A new connection got no answer from the database within its connect timeout. Nothing was sent. */
export const FST_FORK_SAFE_DB_CONNECT_TIMEOUT = createError(
  'FST_FORK_SAFE_DB_CONNECT_TIMEOUT',
  'fastify-fork-safe-db: the database of the "%s" pool did not answer a new connection in time (%s); no statement was sent',
  503
)

/** The database refused a new connection, or closed it during the handshake. Nothing was sent. */
export const FST_FORK_SAFE_DB_CONNECT_REFUSED = createError(
  'FST_FORK_SAFE_DB_CONNECT_REFUSED',
  'fastify-fork-safe-db: the database of the "%s" pool refused a new connection (%s); no statement was sent',
  503
)

/** The server chose this transaction as a deadlock's victim (errno 1213) and rolled it back. */
export const FST_FORK_SAFE_DB_DEADLOCK = createError(
  'FST_FORK_SAFE_DB_DEADLOCK',
  'fastify-fork-safe-db: %s',
  503
)

/** The statement waited for a row lock longer than innodb_lock_wait_timeout (errno 1205). */
export const FST_FORK_SAFE_DB_LOCK_WAIT_TIMEOUT = createError(
  'FST_FORK_SAFE_DB_LOCK_WAIT_TIMEOUT',
  'fastify-fork-safe-db: %s',
  503
)

/** The database did not finish in time for shutdown; the query was abandoned. */
export const FST_FORK_SAFE_DB_CLOSE_TIMEOUT = createError(
  'FST_FORK_SAFE_DB_CLOSE_TIMEOUT',
  'fastify-fork-safe-db: the "%s" pool was torn down because the database did not finish within closeTimeoutMillis (%s ms)',
  503
)

/**
 * The client of the request went away (its socket closed) before this statement was sent: it
 * is not sent at all, since nobody would read its result. 499 is nginx's "client closed request".
 */
export const FST_FORK_SAFE_DB_CLIENT_GONE = createError(
  'FST_FORK_SAFE_DB_CLIENT_GONE',
  'fastify-fork-safe-db: the client of this request went away; the statement was not sent',
  499
)

/**
 * The installed knex, tarn or mysql2 no longer has a field or method the plugin relies on.
 * Raised when the plugin registers (or, for mysql2's connection fields, by the first connection).
 */
export const FST_FORK_SAFE_DB_UNSUPPORTED_VERSION = createError(
  'FST_FORK_SAFE_DB_UNSUPPORTED_VERSION',
  'fastify-fork-safe-db: %s is missing or has changed shape (installed: %s); this version of the plugin supports knex ^3.2.0 and mysql2 ^3.19.0',
  500
)

/** The pool was used after the Fastify instance closed. */
export const FST_FORK_SAFE_DB_CLOSED = createError(
  'FST_FORK_SAFE_DB_CLOSED',
  'fastify-fork-safe-db: the "%s" pool is closed',
  503
)

/** The connection budget cannot fit this configuration and `budget.onExceed` is 'fail'. Raised by ready(). */
export const FST_FORK_SAFE_DB_BUDGET_EXCEEDED = createError(
  'FST_FORK_SAFE_DB_BUDGET_EXCEEDED',
  'fastify-fork-safe-db: the "%s" pool does not fit its connection budget: %s',
  500
)

/**
 * A transaction was begun on `request.db` after the request's response had ended: nobody would
 * see its outcome, and nothing would end it. Begin background work on `fastify.db` instead.
 */
export const FST_FORK_SAFE_DB_TRANSACTION_AFTER_RESPONSE = createError(
  'FST_FORK_SAFE_DB_TRANSACTION_AFTER_RESPONSE',
  'fastify-fork-safe-db: a transaction was begun on request.db after the response of %s had ended; it was not begun (or rolled back at once). Await transactions before replying, or use fastify.db for work that outlives the request',
  500
)

/** The plugin rolled back a transaction of `request.db`; the message says why. */
export const FST_FORK_SAFE_DB_TRANSACTION_ROLLED_BACK = createError(
  'FST_FORK_SAFE_DB_TRANSACTION_ROLLED_BACK',
  'fastify-fork-safe-db: the transaction was rolled back because %s',
  500
)

/**
 * A `{ transaction: true }` route replied in a form whose end the plugin cannot see before the
 * client does (a fetch `Response` object); the transaction was rolled back.
 */
export const FST_FORK_SAFE_DB_ROUTE_TRANSACTION_PAYLOAD = createError(
  'FST_FORK_SAFE_DB_ROUTE_TRANSACTION_PAYLOAD',
  'fastify-fork-safe-db: the transaction route %s replied with %s, which it cannot commit before the client sees it; the transaction was rolled back. Reply with the body (a payload or a stream) and set the status and headers on the reply instead',
  500
)

/**
 * A route asked for a transaction under a decorator no registration in its context has: it would
 * run without one. Raised by ready().
 */
export const FST_FORK_SAFE_DB_ROUTE_OPTION_UNCLAIMED = createError(
  'FST_FORK_SAFE_DB_ROUTE_OPTION_UNCLAIMED',
  'fastify-fork-safe-db: route(s) %s use a route option that no registration of the plugin in their encapsulation context answers to (registered decorators: %s); register the plugin with that decorator in the route\'s context or one above it, or remove the option',
  500
)

/**
 * `startCluster()` of fastify-fork-safe-db/cluster was called where it cannot run: in a cluster
 * worker, or a second time in one primary. Raised by the call.
 */
export const FST_FORK_SAFE_DB_CLUSTER_NOT_PRIMARY = createError(
  'FST_FORK_SAFE_DB_CLUSTER_NOT_PRIMARY',
  'fastify-fork-safe-db/cluster: startCluster() runs once, in the cluster primary; it was called %s',
  500
)

/**
 * The server answered that it takes no writes (errno 1290 `--read-only`, 1792 a read-only
 * transaction, 1836 a read-only session): a demoted primary, or a replica. The connection was
 * closed and is never lent again; nothing of the statement took effect. Retry: the next borrow
 * lands on a host that takes writes. The message names the host (`host:port`), never its settings.
 */
export const FST_FORK_SAFE_DB_READ_ONLY = createError<'FST_FORK_SAFE_DB_READ_ONLY', 503, [host: string, decorator: string, errno: string, options?: { cause: unknown }]>(
  'FST_FORK_SAFE_DB_READ_ONLY',
  'fastify-fork-safe-db: the server %s of the "%s" pool is read-only (errno %s); the connection was closed, retry on another host',
  503
)

/**
 * A Galera node answered 1047 "WSREP has not yet prepared node for application use": it is not
 * part of the primary component (or not synced). The connection was closed; nothing took effect.
 */
export const FST_FORK_SAFE_DB_NODE_NOT_READY = createError<'FST_FORK_SAFE_DB_NODE_NOT_READY', 503, [host: string, decorator: string, errno: string, options?: { cause: unknown }]>(
  'FST_FORK_SAFE_DB_NODE_NOT_READY',
  'fastify-fork-safe-db: the server %s of the "%s" pool is not ready for queries (errno %s: not in the cluster\'s primary component, or not synced); the connection was closed, retry on another host',
  503
)

/**
 * A transaction failed before its COMMIT was sent (its connection was lost, closed, demoted to
 * read-only, or the server rolled it back): nothing of it was committed, and running it again is
 * safe. `commitSent` is false; `cause` is the statement's error.
 */
export const FST_FORK_SAFE_DB_TRANSACTION_ABORTED = createError(
  'FST_FORK_SAFE_DB_TRANSACTION_ABORTED',
  'fastify-fork-safe-db: the transaction of the "%s" pool was not committed (%s); running it again is safe',
  503
)

/**
 * A transaction's connection was lost after its COMMIT was sent and before the server answered:
 * it may or may not have been committed. Never retried by the plugin; `commitSent` is true.
 */
export const FST_FORK_SAFE_DB_COMMIT_UNKNOWN = createError(
  'FST_FORK_SAFE_DB_COMMIT_UNKNOWN',
  'fastify-fork-safe-db: the connection of the "%s" pool was lost after the transaction\'s COMMIT was sent (%s); whether it was committed is unknown',
  500
)

/**
 * Every replica of the registration lags behind its primary by more than `maxReplicaLagSeconds`
 * (or is not replicating), and no fallback registration is named: the query was not run.
 */
export const FST_FORK_SAFE_DB_REPLICA_LAG = createError(
  'FST_FORK_SAFE_DB_REPLICA_LAG',
  'fastify-fork-safe-db: every replica of the "%s" pool lags more than %s s behind its primary (%s); the query was not run',
  503
)
