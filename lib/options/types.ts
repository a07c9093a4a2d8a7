// The options' public types, as users write them (their JSDoc is what editors show). What each
// accepts and its default are described once, in descriptions.ts; resolve-options.ts checks at
// compile time that the two name the same keys.

import type { Knex } from 'knex'
import type { ConnectionOptions } from 'mysql2'
import type { ConnectionBudgetOptions } from './budget'
import type { ConnectionProvider, UnsafeOptIns } from './connection'

// The same words as hosts/host.ts (a layer above, which options/ may not import): a host policy,
// a role. Written out here so the public option types stand on their own.
/** `sequential`: new connections go to the first host in rotation; `random`: spread over them. */
export type HostPolicyOption = 'sequential' | 'random'
/** `primary`: every connection must take writes; `any`: any server that answers queries. */
export type HostRoleOption = 'primary' | 'any'

/**
 * The part of OpenTelemetry's `MeterProvider` the plugin calls. Written out, so the plugin's types
 * do not need `@opentelemetry/api` installed; an SDK's `MeterProvider` fits it.
 */
export interface MeterProviderLike {
  getMeter (name: string, version?: string, options?: { schemaUrl?: string }): unknown
}

/** `metrics` as an object: where the metrics go, and the pool's name in them. */
export interface MetricsOptions {
  /** The provider to create the plugin's meter from. Default: the global one (`metrics.getMeterProvider()` of `@opentelemetry/api`). */
  meterProvider?: MeterProviderLike
  /** `db.client.connection.pool.name` on every metric. Default: the registration's `decorator`. */
  poolName?: string
}

/** knex's options the plugin passes through as they are. */
export type KnexPassThrough = Pick<Knex.Config,
  'version' | 'debug' | 'postProcessResponse' | 'wrapIdentifier' | 'useNullAsDefault' | 'asyncStackTraces' | 'migrations' | 'seeds' | 'acquireConnectionTimeout'
> & {
  /** knex's `userParams`: available as `knex.userParams`, and to wrapIdentifier / postProcessResponse. */
  userParams?: Record<string, unknown>
}

/** knex's per-connection hook: `(connection, done) => …`, with the mysql2 connection. */
export type AfterCreate = (connection: unknown, done: (error: Error | null, connection?: unknown) => void) => void

/** Pool sizing and timing, passed to knex and tarn, and knex's own pool hooks. */
export interface ForkSafeDbPoolOptions {
  /** Connections kept open while idle, and opened by warm-up. Default 2. */
  min?: number
  /** Upper bound on open connections in this process. Default 10. */
  max?: number
  /** How long a query waits for a free connection before failing. Default 5000. */
  acquireTimeoutMillis?: number
  /** How long opening one connection may take. Default 30000 (tarn's). */
  createTimeoutMillis?: number
  /** How long closing one connection may take. Default 5000 (tarn's). */
  destroyTimeoutMillis?: number
  /** Idle connections above `min` are closed after this long. Default 30000 (tarn's). */
  idleTimeoutMillis?: number
  /** How often idle connections are checked. Default 1000 (tarn's). */
  reapIntervalMillis?: number
  /** Pause between failed connection attempts. Default 200 (tarn's). */
  createRetryIntervalMillis?: number
  /** Connections are replaced after this long, idle ones in the background. Default 1800000 (30 min). */
  maxConnectionLifetimeMillis?: number
  /** Random spread added to each connection's lifetime, so they do not expire together. Default 10% of it. */
  maxConnectionLifetimeJitterMillis?: number
  /** knex's hook for per-connection session set-up (`SET time_zone …`); runs after the plugin's own. */
  afterCreate?: AfterCreate
  /** knex's hook to refuse a connection on borrow; runs before the plugin's borrow check. */
  validate?: (connection: unknown) => boolean | Promise<boolean>
  /** tarn's log: receives its warnings (scrubbed) instead of the Fastify logger. */
  log?: (message: string, level: string) => void
  /** Must stay true (the default): a failed connect fails the waiting query at once. */
  propagateCreateError?: true
}

/**
 * The plugin's options: knex's own configuration (knex's names; `client` may only be 'mysql2'),
 * plus the plugin's.
 */
export interface ForkSafeDbOptions extends KnexPassThrough {
  /** knex's client; the plugin is knex's mysql2 client, extended. */
  client?: 'mysql2'
  /**
   * `mysql://user:password@host:3306/database` (or several hosts: `mysql://user:password@h1:3306,h2:3306/database`),
   * a mysql2 connection object, a non-empty list of URLs and objects (one host each, settings of their own),
   * or a function returning one URL or object (knex's rotating credentials).
   */
  connection: string | ConnectionOptions | ReadonlyArray<string | ConnectionOptions> | ConnectionProvider
  /** With several hosts: `sequential` sends new connections to the first host in rotation, `random` spreads them. Default 'sequential'. */
  hostPolicy?: HostPolicyOption
  /** `primary`: a new connection must take writes, else the next host is tried; `any`: any server that answers. Default 'any'. */
  role?: HostRoleOption
  pool?: ForkSafeDbPoolOptions
  /** knex's log: its warnings, errors, deprecations and debug lines (scrubbed); levels left out go to the Fastify logger. */
  log?: Knex.Logger
  /** Only `false` (the plugin's setting): `true` would put bound values into error messages. */
  compileSqlOnError?: false
  /** Connections to open and verify on `onReady`: `true` for `pool.min`, `false` for none, or a count. */
  warmup?: boolean | number
  /** Let `ready()` resolve with a cold pool (and a logged warning) when warm-up fails. Default false. */
  allowColdStart?: boolean
  /** The name of the `fastify` and `request` decorators. Default `db`. */
  decorator?: string
  /** A borrowed connection idle at least this long gets a socket check (no round trip). Default 0: every borrow. */
  checkAfterIdleMillis?: number
  /** A borrowed connection idle at least this long is pinged (one round trip). Default 30000; 0 pings always. */
  pingAfterIdleMillis?: number
  /** Every query without its own `.timeout()` is cancelled on the server after this long. Default 30000; 0 = off. */
  queryTimeoutMillis?: number
  /** Queries that may wait for a connection once the pool is at pool.max; more are rejected at once. Default 4 x pool.max. */
  maxPendingAcquires?: number
  /** How long close() waits for in-flight queries before tearing connections down. Default 10000. */
  closeTimeoutMillis?: number
  /** Explicit opt-ins for driver features that are dangerous by default. */
  allowUnsafe?: UnsafeOptIns
  /** Share a total number of connections among all processes: caps each process's pool.max. Default: none. */
  budget?: ConnectionBudgetOptions
  /** Warm-up opens at most this many connections at the same time. Default 2. */
  warmupConcurrency?: number
  /** Warm-up starts after a random delay of up to this long, to spread a fleet's restart. Default 0. */
  warmupJitterMillis?: number
  /** A read replica further behind than this gets no new borrows until it catches up. Default: no lag guard. */
  maxReplicaLagSeconds?: number
  /** How often the lag guard reads each host's lag. Default 1000. */
  replicaLagCheckMillis?: number
  /** Another registration's decorator (e.g. 'db') whose pool serves queries while every replica lags. Default: none. */
  replicaLagFallback?: string
  /**
   * OpenTelemetry metrics with the semantic conventions' names (`db.client.connection.*`,
   * `db.client.operation.duration`): `true` for the global meter provider, a meter provider, or
   * `{ meterProvider, poolName }`. Needs `@opentelemetry/api`. Default false.
   */
  metrics?: boolean | MeterProviderLike | MetricsOptions
  /** A connection held longer than this logs one warning with the borrower's stack, route and request id. Default 0: off. */
  leakDetectionThresholdMillis?: number
  /** A statement that runs longer than this logs one warning with its SQL (placeholders only), route and request id. Default 0: off. */
  slowQueryMillis?: number
}
