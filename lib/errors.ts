import createError from '@fastify/error'

// Every error the plugin raises has a stable code, so callers can match on `err.code`
// (or `instanceof` these constructors) instead of parsing messages.

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

/** No connection became free within pool.acquireTimeoutMillis. */
export const FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT = createError(
  'FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT',
  'fastify-fork-safe-db: no connection of the "%s" pool became free within %s ms',
  503
)

/** The database cannot be reached right now; connect attempts are being held back. */
export const FST_FORK_SAFE_DB_UNAVAILABLE = createError(
  'FST_FORK_SAFE_DB_UNAVAILABLE',
  'fastify-fork-safe-db: the database of the "%s" pool cannot be reached right now',
  503
)

/** The database did not finish in time for shutdown; the query was abandoned. */
export const FST_FORK_SAFE_DB_CLOSE_TIMEOUT = createError(
  'FST_FORK_SAFE_DB_CLOSE_TIMEOUT',
  'fastify-fork-safe-db: the "%s" pool was torn down because the database did not finish within closeTimeoutMillis (%s ms)',
  503
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
