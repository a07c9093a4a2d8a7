import type { FastifyBaseLogger } from 'fastify'
import knex, { type Knex } from 'knex'
import { KNEX_CONNECTION_KEYS, SECRET_KEYS } from '../options/connection'
import { knexLogBridge, tarnLogBridge } from '../logging/log-bridges'
import { hideProperties } from '../logging/redact'
import type { AfterCreate, ResolvedOptions } from '../options/resolve-options'
import { sanitizeQueryError, type FailedQuery } from '../query/sanitize-error'
import type { DriverConnection } from '../driver/types'
import { ForkSafeClient } from './fork-safe-client'
import { LagFallbackClient } from './lag-fallback-client'
import { LeakTrackingClient } from './leak-tracking-client'
import { ClientRuntime, runtimeEntry, type RuntimeEvents } from './runtime'
import { extendTransactions } from './transaction-retry'

/** A knex instance of the plugin and the state its client (and its transactions' clients) share. */
export interface BuiltKnex {
  knex: Knex
  runtime: ClientRuntime
}

/**
 * Builds a knex instance for the current process, on the plugin's client class, with the user's
 * knex options. Constructing it opens nothing: tarn creates connections on the first acquire
 * (and never pre-creates `pool.min` by itself).
 */
export function buildKnex (options: ResolvedOptions, log: FastifyBaseLogger, events: RuntimeEvents): BuiltKnex {
  const runtime = new ClientRuntime(options, log, events)
  const { afterCreate, validate, log: poolLog } = options.poolHooks
  const instance = knex({
    ...options.knex,
    client: clientClass(options) as unknown as typeof Knex.Client,
    connection: options.connection.knex as Knex.Config['connection'],
    // Placeholders, not values, in the statement knex prepends to a driver error's message.
    compileSqlOnError: false,
    log: knexLogBridge(log, options.secrets, options.knexLog),
    pool: {
      ...options.pool,
      // Fail fast on a wrong password or an unreachable server instead of retrying until the acquire timeout.
      propagateCreateError: true,
      log: tarnLogBridge(log, options.secrets, poolLog),
      ...(afterCreate === undefined ? {} : { afterCreate: closingOnFailure(afterCreate) }),
      ...(validate === undefined ? {} : { validate })
    },
    ...runtimeEntry(runtime)
  } as Knex.Config)
  // knex hides `password` only; mysql2 takes four more.
  hideProperties(instance.client.config.connection ?? {}, SECRET_KEYS)
  // What mysql2 gets: knex's own `collate` stays readable to knex and out of mysql2's key check.
  hideProperties(instance.client.connectionSettings ?? {}, [...SECRET_KEYS, ...KNEX_CONNECTION_KEYS])
  // Ahead of every other listener (knex's own forwards it to `knex.on('query-error')`), so no
  // handler or listener ever sees the error unsanitized.
  instance.client.prependListener('query-error', (error: unknown, query: FailedQuery) => sanitizeQueryError(error, query, options.secrets))
  extendTransactions(instance, log)
  return { knex: instance, runtime }
}

/**
 * Only a registration with a fallback releases connections another registration lent; only one
 * with leak detection captures stacks and keeps holders (it covers a fallback too).
 */
function clientClass (options: ResolvedOptions): typeof ForkSafeClient {
  if (options.leakDetectionThresholdMillis > 0) return LeakTrackingClient
  return options.replicaLagFallback === undefined ? ForkSafeClient : LagFallbackClient
}

/**
 * knex opens the connection, then runs `pool.afterCreate`; when that fails, knex reports the
 * error but never closes the connection it opened. This one is closed.
 */
function closingOnFailure (afterCreate: AfterCreate): AfterCreate {
  return (connection, done) => {
    const finish = (error: Error | null, result?: unknown) => {
      if (error !== null && error !== undefined) (connection as DriverConnection).destroy()
      done(error, result ?? connection)
    }
    try {
      afterCreate(connection, finish)
    } catch (error) {
      finish(error as Error)
    }
  }
}
