import type { FastifyBaseLogger } from 'fastify'
import knex, { type Knex } from 'knex'
import { guardAcquire } from '../pool/acquire-guard'
import { createBorrowCheck } from '../pool/borrow-check'
import { ConnectBreaker } from '../pool/connect-breaker'
import { PoolCounters, roundMillis } from '../pool/stats'
import { IdleKeeper } from '../pool/idle-keeper'
import { trackConnects } from '../pool/teardown'
import { SECRET_KEYS } from '../options/connection'
import { forwardDriverWarnings, knexLogBridge, tarnLogBridge } from '../logging/log-bridges'
import type { ResolvedOptions } from '../options/resolve-options'
import { sanitizeQueryError, type FailedQuery } from '../query/sanitize-error'
import { createQueryCanceller, type QueryCanceller } from '../query/cancel'
import { applyQueryTimeouts } from '../query/timeout'
import { trackStatementOwners, type StatementOwners } from '../query/owners'
import { hideProperties } from '../logging/redact'

const MAX_PING_TIMEOUT_MILLIS = 2000

// Probes a silently dropped peer within a minute instead of the OS default of two hours.
const TCP_KEEPALIVE_INITIAL_DELAY_MILLIS = 30_000

/** A knex instance and the parts the pool manager works with. */
export interface PoolParts {
  knex: Knex
  keeper: IdleKeeper
  connecting: ReturnType<typeof trackConnects>
  canceller: QueryCanceller
  counters: PoolCounters
  /** Borrows without being recorded as a query's wait (warm-up, keeper, health check). */
  acquireInternal: () => Promise<unknown>
  pingTimeoutMillis: number
  /** Which request's scope runs which statement. */
  owners: StatementOwners
}

/**
 * Builds a knex instance for the current process. Constructing it opens nothing: tarn creates
 * connections on the first acquire (and never pre-creates `pool.min` by itself).
 */
export function createKnex (options: ResolvedOptions, log: FastifyBaseLogger): PoolParts {
  const { secrets } = options
  // At most half the acquire deadline, so a dead connection is replaced within the same deadline.
  const pingTimeoutMillis = Math.min(MAX_PING_TIMEOUT_MILLIS, Math.max(1, Math.floor(options.pool.acquireTimeoutMillis / 2)))
  const borrowCheck = createBorrowCheck({
    checkAfterIdleMillis: options.checkAfterIdleMillis,
    pingAfterIdleMillis: options.pingAfterIdleMillis,
    pingTimeoutMillis,
    looksAlive: (connection) => instance.client.validateConnection(connection)
  })

  const instance = knex({
    client: 'mysql2',
    connection: { keepAliveInitialDelay: TCP_KEEPALIVE_INITIAL_DELAY_MILLIS, ...options.connection } as Knex.MySql2ConnectionConfig,
    // Placeholders, not values, in the statement knex prepends to a driver error's message.
    compileSqlOnError: false,
    log: knexLogBridge(log, secrets),
    pool: {
      ...options.pool,
      // Fail fast on a wrong password or an unreachable server instead of retrying until the acquire timeout.
      propagateCreateError: true,
      log: tarnLogBridge(log, secrets),
      afterCreate (connection: NodeJS.EventEmitter & { config: object }, done: (error: Error | null, connection: unknown) => void) {
        // mysql2 keeps every password it was given on `connection.config`; knex hides only `password`.
        hideProperties(connection.config, SECRET_KEYS)
        forwardDriverWarnings(connection, log, secrets)
        borrowCheck.markIdle(connection)
        done(null, connection)
      },
      validate: borrowCheck.validate
    } as Knex.PoolConfig
  })

  const breaker = new ConnectBreaker(options.decorator, log)
  breaker.guard(instance.client)
  const counters = new PoolCounters()
  const acquireInternal = guardAcquire(instance.client, {
    decorator: options.decorator,
    maxPendingAcquires: options.maxPendingAcquires,
    acquireTimeoutMillis: options.pool.acquireTimeoutMillis,
    breaker,
    onAcquired (waitMillis, cold) {
      counters.recordAcquire(waitMillis, cold)
      if (cold) log.debug({ waitedMillis: roundMillis(waitMillis) }, 'a query waited for a new connection to be opened (cold acquire)')
    }
  })
  instance.client.pool.on('createSuccess', () => { counters.created += 1 })
  instance.client.pool.on('destroySuccess', () => { counters.destroyed += 1 })
  hideProperties(instance.client.config.connection, SECRET_KEYS)
  hideProperties(instance.client.connectionSettings, SECRET_KEYS)
  instance.client.pool.on('release', borrowCheck.markIdle)
  // Emitted before the error is rethrown to the caller, so the handler only ever sees it sanitized.
  const sanitize = (error: unknown, query: FailedQuery) => sanitizeQueryError(error, query, secrets)
  instance.client.on('query-error', sanitize)
  const canceller = createQueryCanceller(instance.client, pingTimeoutMillis, log)
  applyQueryTimeouts(instance.client, options.queryTimeoutMillis, canceller, sanitize)
  const keeper = new IdleKeeper({
    client: instance.client,
    acquire: acquireInternal,
    log,
    pingTimeoutMillis,
    idleFor: borrowCheck.idleFor,
    markAlive: borrowCheck.markIdle
  })
  const owners = trackStatementOwners(instance.client)
  return { knex: instance, keeper, connecting: trackConnects(instance.client), canceller, counters, acquireInternal, pingTimeoutMillis, owners }
}
