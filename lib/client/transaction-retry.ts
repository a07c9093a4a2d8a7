import type { FastifyBaseLogger } from 'fastify'
import type { Knex } from 'knex'
import { FST_FORK_SAFE_DB_INVALID_OPTION } from '../errors'
import { isSafeToRetry } from '../query/transaction-outcome'
import { rejectingCommit } from './awaited-commit'

// `db.transaction(fn, { retries: 3 })`: knex's own call, with one more field of knex's own
// TransactionConfig. When the transaction fails with FST_FORK_SAFE_DB_TRANSACTION_ABORTED
// (nothing was committed: a deadlock or Galera certification conflict, a lock-wait timeout, a
// host that became read-only or left the cluster, a connection lost before COMMIT was sent),
// the callback runs again, up to `retries` more times, on a fresh transaction (a new borrow, so
// the pool's checks and a failover choose its connection), after a jittered back-off. Never:
// - after COMMIT was sent (FST_FORK_SAFE_DB_COMMIT_UNKNOWN) or for any other error;
// - for the promise form (`await db.transaction({ retries })`): there is no callback to run
//   again, so it is refused with FST_FORK_SAFE_DB_INVALID_OPTION; so is a savepoint
//   (`trx.transaction(fn, { retries })`), which is part of its enclosing transaction's attempt;
// - when the request that began it is gone (request.db: its client hung up).
// It is opt-in per call, with no plugin-wide default: the callback runs again, so whatever it
// does besides the database (an e-mail, a call to another service) runs again too, and only its
// author can say that is safe.
//
// Back-off: full jitter (a uniform wait in [0, min(cap, base * 2^(attempt-1)))), base 10 ms and
// cap 500 ms. Two transactions that collided (a deadlock, a certification conflict) collide again
// when they retry in step; full jitter spreads them the most for the least total wait. The base
// is about one short transaction on a nearby server; the cap keeps a retried request within a
// typical HTTP deadline, and a failover that takes longer is the breaker's and the next borrow's
// business, not a longer sleep's. The timer is not unref'ed: the caller is awaiting the result,
// as it awaits a statement in flight.

export const BASE_BACKOFF_MILLIS = 10
export const MAX_BACKOFF_MILLIS = 500
/** More attempts than this only repeat a conflict that retrying does not resolve. */
export const MAX_RETRIES = 10

/** Which attempt a transaction is (1 for the first), for its begin event. */
export const ATTEMPT = Symbol('fastify-fork-safe-db:transaction-attempt')
/** Asked before each retry; false stops retrying (request.db: the client hung up). */
export const RETRY_WHILE = Symbol('fastify-fork-safe-db:transaction-retry-while')

export type RetryConfig = Knex.TransactionConfig & { [ATTEMPT]?: number, [RETRY_WHILE]?: () => boolean }
type Container = (trx: Knex.Transaction) => unknown
type Begin = (container: Container, config: Knex.TransactionConfig) => PromiseLike<unknown>

/** The attempt a transaction's config names (1 when not retried). */
export function attemptOf (config: Knex.TransactionConfig | undefined): number {
  return (config as RetryConfig | undefined)?.[ATTEMPT] ?? 1
}

function checkedRetries (retries: unknown): number {
  if (Number.isInteger(retries) && (retries as number) >= 0 && (retries as number) <= MAX_RETRIES) return retries as number
  throw new FST_FORK_SAFE_DB_INVALID_OPTION(`transaction option retries must be an integer from 0 to ${MAX_RETRIES}, got \`${String(retries)}\` (${typeof retries})`)
}

/**
 * Throws when `retries` reached the client itself: the wrapper below takes it off a callback
 * transaction's config, so here it came with the promise form, or on a savepoint.
 */
export function refuseRetries (config: Knex.TransactionConfig | undefined, nested: boolean): void {
  const retries = config?.retries
  if (retries === undefined || checkedRetries(retries) === 0) return
  throw new FST_FORK_SAFE_DB_INVALID_OPTION(nested
    ? 'transaction option retries applies to a top-level transaction; a savepoint (trx.transaction()) is retried with its enclosing transaction'
    : 'transaction option retries needs a callback to run again, given to fastify.db or request.db: db.transaction(async (trx) => { … }, { retries }); the promise form (await db.transaction({ retries })) cannot be retried')
}

/** A uniform wait below the attempt's exponential bound (full jitter). */
export function backoffMillis (attempt: number, random: () => number = Math.random): number {
  return random() * Math.min(MAX_BACKOFF_MILLIS, BASE_BACKOFF_MILLIS * 2 ** (attempt - 1))
}

/**
 * Makes `instance.transaction(fn, { retries })` run `fn` again on an aborted transaction, and the
 * promise form's `commit()` reject when the COMMIT fails (awaited-commit.ts); every other call
 * goes to knex's unchanged.
 */
export function extendTransactions (instance: Knex, log: FastifyBaseLogger): void {
  const begin = instance.transaction as (this: Knex, container?: unknown, config?: unknown) => unknown
  Object.defineProperty(instance, 'transaction', {
    configurable: true,
    writable: true,
    value: function transaction (this: Knex, container?: unknown, config?: unknown): unknown {
      if (typeof container !== 'function') return (begin.call(this, container, config) as Promise<Knex.Transaction>).then(rejectingCommit)
      const retries = (config as Knex.TransactionConfig | undefined)?.retries
      if (retries === undefined) return begin.call(this, container, config)
      let count: number
      try {
        count = checkedRetries(retries)
      } catch (error) {
        return Promise.reject(error)
      }
      const { retries: _retries, ...rest } = config as RetryConfig
      if (count === 0) return begin.call(this, container, rest)
      return runWithRetries((fn, attemptConfig) => begin.call(this, fn, attemptConfig) as PromiseLike<unknown>, container as Container, rest, count, log)
    }
  })
}

async function runWithRetries (begin: Begin, container: Container, config: RetryConfig, retries: number, log: FastifyBaseLogger): Promise<unknown> {
  const mayRetry = config[RETRY_WHILE]
  for (let attempt = 1; ; attempt++) {
    try {
      return await begin(container, attempt === 1 ? config : { ...config, [ATTEMPT]: attempt })
    } catch (error) {
      if (attempt > retries || !isSafeToRetry(error) || (mayRetry !== undefined && !mayRetry())) throw error
      const cause = (error as { cause?: { code?: unknown } }).cause?.code
      log.debug({ attempt: attempt + 1, code: typeof cause === 'string' ? cause : undefined }, 'transaction aborted before COMMIT; running it again')
      await new Promise((resolve) => setTimeout(resolve, backoffMillis(attempt)))
    }
  }
}
