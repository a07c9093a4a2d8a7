import { channel } from 'node:diagnostics_channel'

// The one seam for what happens in the plugin: it publishes on `node:diagnostics_channel`
// channels named under the package (as undici publishes `undici:request:create`), and whatever
// observes it subscribes: the plugin's own `stats()`, and a user's metrics, leak detector or
// slow-query log. Every publisher checks `hasSubscribers` first, so a channel nobody listens to
// costs a property read. A context carries the pool's identity (decorator name, pid), ids,
// timings and error codes: never a bound value, a password or a connection string. See
// docs/architecture.md for each channel's fields.

const PREFIX = 'fastify-fork-safe-db'

/** The names to subscribe to, e.g. `subscribe(channels.queryEnd, (event) => …)`. */
export const channels = Object.freeze({
  /** A pool connection was opened and set up (and knex's `pool.afterCreate` accepted it). */
  poolConnect: `${PREFIX}:pool:connect`,
  /** A borrow ended: a connection was lent, after `waitMillis`; or it failed (`errorCode`). */
  poolAcquire: `${PREFIX}:pool:acquire`,
  /** A borrowed connection went back to the pool. */
  poolRelease: `${PREFIX}:pool:release`,
  /** A pool connection was closed; `reason` says why. */
  poolDestroy: `${PREFIX}:pool:destroy`,
  /** A statement was sent. */
  queryStart: `${PREFIX}:query:start`,
  /** A statement ended, after `durationMillis`; `errorCode` when it failed. */
  queryEnd: `${PREFIX}:query:end`,
  /** A statement outlived its timeout. */
  queryTimeout: `${PREFIX}:query:timeout`,
  /** A running statement is being stopped on the server (KILL QUERY). */
  queryCancel: `${PREFIX}:query:cancel`,
  /** A connect failed: connect attempts are held back (the database is unreachable). */
  breakerOpen: `${PREFIX}:breaker:open`,
  /** A connect succeeded after failures: the database is reachable again. */
  breakerClose: `${PREFIX}:breaker:close`,
  /** A transaction's BEGIN (or a savepoint) succeeded. */
  transactionBegin: `${PREFIX}:transaction:begin`,
  /** A transaction ended: committed or rolled back. */
  transactionEnd: `${PREFIX}:transaction:end`
} as const)

/** Which pool an event is about: one per registration and process. */
export interface PoolIdentity {
  /** The registration's decorator name (`db` by default). */
  readonly decorator: string
  readonly pid: number
}

interface PoolEvent {
  readonly pool: PoolIdentity
}

export interface PoolConnectEvent extends PoolEvent {
  /** The host it is connected to: `host:port` or the socket path, as in `stats().hosts`. */
  readonly host: string
  /** The server's connection (thread) id. */
  readonly connectionId: number | null
  /** From the start of the connect to the connection set up (afterCreate not included). */
  readonly connectMillis: number
  /** What the server said it is in its handshake: `mariadb` or `mysql` (undefined if it did not say). */
  readonly system: 'mariadb' | 'mysql' | undefined
  /** The database the connection uses (its `database` setting), if it names one. */
  readonly database: string | undefined
}

export interface PoolAcquireEvent extends PoolEvent {
  /** The connection lent; undefined when the borrow failed. */
  readonly connectionId: number | null | undefined
  /** The host of the connection lent (`host:port` or the socket path); undefined when the borrow failed. */
  readonly host?: string
  readonly waitMillis: number
  /** The connection was opened for this borrow (the borrower waited for a connect). */
  readonly cold: boolean
  /** A borrow of the plugin's own (warm-up, the idle keeper, a health check), not a query's. */
  readonly internal: boolean
  /** The failure's code (FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, …_POOL_SATURATED, …). */
  readonly errorCode?: string
}

export interface PoolReleaseEvent extends PoolEvent {
  /** The host it is connected to: `host:port` or the socket path, as in `stats().hosts`. */
  readonly host: string
  readonly connectionId: number | null
  /** From the borrow to this release; undefined when nobody subscribed to `pool:release` at the borrow. */
  readonly heldMillis: number | undefined
}

/**
 * `closed`: the pool was destroyed; `broken`: the connection failed or was closed on purpose (an
 * error, a timed-out statement, a cancel that gave up, a failed check); `expired`: it reached
 * `pool.maxConnectionLifetimeMillis`; `retired`: tarn let it go (idle past its idle timeout, or
 * failed knex's check).
 */
export type DestroyReason = 'closed' | 'broken' | 'expired' | 'retired'

export interface PoolDestroyEvent extends PoolEvent {
  /** The host it is connected to: `host:port` or the socket path, as in `stats().hosts`. */
  readonly host: string
  readonly connectionId: number | null
  readonly reason: DestroyReason
}

export interface QueryStartEvent extends PoolEvent {
  /** Unique in this process; pairs start, end and timeout. */
  readonly queryId: number
  readonly connectionId: number | null
  /** The host it runs on: `host:port` or the socket path, as in `stats().hosts`. */
  readonly host: string
  /** The statement with `?` placeholders, never its bound values. */
  readonly sql: string
  /** knex's method (`select`, `insert`, `raw`, …), when it says. */
  readonly method: string | undefined
  readonly inTransaction: boolean
  /** The request it belongs to (`request.db`), by Fastify's request id; undefined outside a request. */
  readonly requestId: string | undefined
  /** Its request's route (`GET /users/:id`); undefined outside a request. */
  readonly route: string | undefined
}

/** A statement's end carries its start's fields too, so a subscriber needs no map from start to end. */
export interface QueryEndEvent extends QueryStartEvent {
  readonly durationMillis: number
  /** The statement failed (whether or not its error has a code). */
  readonly failed: boolean
  /** The error's code when the statement failed (`ER_DUP_ENTRY`, `FST_FORK_SAFE_DB_QUERY_TIMEOUT`, …). */
  readonly errorCode?: string
  /** The server's error number when the server answered with an error (`1062`); absent otherwise. */
  readonly errorNumber?: number
}

export interface QueryTimeoutEvent extends PoolEvent {
  /** Undefined for a transaction's own statement (BEGIN, COMMIT…). */
  readonly queryId: number | undefined
  readonly connectionId: number | null
  readonly timeoutMillis: number
  readonly inTransaction: boolean
}

export interface QueryCancelEvent extends PoolEvent {
  /** The host the statement runs on, where the KILL goes. */
  readonly host: string
  readonly connectionId: number | null
  /** Why (`its query timed out`, `the client went away`). */
  readonly reason: string
}

export interface BreakerOpenEvent extends PoolEvent {
  /** The host whose connect failed (with several hosts, each has its own breaker). */
  readonly host: string
  /** The driver's code for the failed connect (ECONNREFUSED, ETIMEDOUT, …). */
  readonly errorCode: string | undefined
}

export interface BreakerCloseEvent extends PoolEvent {
  /** The host that answered again. */
  readonly host: string
  readonly failedAttempts: number
  readonly outageMillis: number
}

export interface TransactionBeginEvent extends PoolEvent {
  /** Unique in this process; pairs begin and end. */
  readonly transactionId: number
  /** A savepoint inside another transaction. */
  readonly nested: boolean
  /** 1, or which run of a callback retried with `{ retries }` this is (each run is a new transaction). */
  readonly attempt: number
}

export interface TransactionEndEvent extends PoolEvent {
  readonly transactionId: number
  readonly outcome: 'committed' | 'rolled back'
  readonly durationMillis: number
  /** The rollback's reason's code, or the failed COMMIT's. */
  readonly errorCode?: string
}

export const poolConnect = channel(channels.poolConnect)
export const poolAcquire = channel(channels.poolAcquire)
export const poolRelease = channel(channels.poolRelease)
export const poolDestroy = channel(channels.poolDestroy)
export const queryStart = channel(channels.queryStart)
export const queryEnd = channel(channels.queryEnd)
export const queryTimeout = channel(channels.queryTimeout)
export const queryCancel = channel(channels.queryCancel)
export const breakerOpen = channel(channels.breakerOpen)
export const breakerClose = channel(channels.breakerClose)
export const transactionBegin = channel(channels.transactionBegin)
export const transactionEnd = channel(channels.transactionEnd)

/** The server's error number of an error (mysql2's `errno`), if it has one. */
export function errorNumberOf (error: unknown): number | undefined {
  const errno = (error as { errno?: unknown } | null | undefined)?.errno
  return typeof errno === 'number' && Number.isInteger(errno) ? errno : undefined
}

/** The code of an error, if it has a string one. */
export function codeOf (error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null | undefined)?.code
  return typeof code === 'string' ? code : undefined
}
