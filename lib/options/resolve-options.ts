import type { Knex } from 'knex'
import { FST_FORK_SAFE_DB_INVALID_OPTION } from '../errors'
import { workersFromEnvironment, type ResolvedBudget } from './budget'
import { resolveConnection, type ResolvedConnection, type UnsafeOptIns } from './connection'
import { BUDGET_OPTIONS, PLUGIN_OPTIONS, POOL_OPTIONS } from './descriptions'
import type { AfterCreate, ForkSafeDbOptions, ForkSafeDbPoolOptions, HostPolicyOption, HostRoleOption, KnexPassThrough, MeterProviderLike, MetricsOptions } from './types'
import { describeValue, isPlainObject, readOptions, type OptionTable, type Reader } from './validate'

export type { AfterCreate, ForkSafeDbOptions, ForkSafeDbPoolOptions, KnexPassThrough, MeterProviderLike, MetricsOptions, ResolvedBudget }

/** Pool sizes and timings, validated; acquireTimeoutMillis is the one knex will apply. */
export type ResolvedPool = Required<Pick<ForkSafeDbPoolOptions, 'min' | 'max' | 'acquireTimeoutMillis'>> &
  Omit<ForkSafeDbPoolOptions, 'afterCreate' | 'validate' | 'log' | 'propagateCreateError'>

/** Options after validation and defaults; what the pool manager works from. */
export interface ResolvedOptions {
  decorator: string
  connection: ResolvedConnection
  hostPolicy: HostPolicyOption
  role: HostRoleOption
  /** Every password the plugin knows of, for scrubbing; a connection function adds to it. */
  secrets: string[]
  pool: ResolvedPool
  /** knex's own pool hooks, as the user gave them. */
  poolHooks: Pick<ForkSafeDbPoolOptions, 'afterCreate' | 'validate' | 'log'>
  /** knex's own options, passed through. */
  knex: KnexPassThrough
  knexLog: Knex.Logger | undefined
  warmup: number
  allowColdStart: boolean
  checkAfterIdleMillis: number
  pingAfterIdleMillis: number
  queryTimeoutMillis: number
  maxPendingAcquires: number
  closeTimeoutMillis: number
  budget: ResolvedBudget | undefined
  warmupConcurrency: number
  warmupJitterMillis: number
  /** The lag guard's threshold; undefined: no lag guard. */
  maxReplicaLagSeconds: number | undefined
  replicaLagCheckMillis: number
  /** The decorator of the registration that serves queries while every replica lags. */
  replicaLagFallback: string | undefined
  /** OpenTelemetry metrics: where they go and the pool's name; undefined: off. */
  metrics: ResolvedMetrics | undefined
  /** 0: leak detection off. */
  leakDetectionThresholdMillis: number
  /** 0: no slow-query log. */
  slowQueryMillis: number
}

/** The `metrics` option resolved: a provider (undefined: the global one) and the pool's name. */
export interface ResolvedMetrics {
  meterProvider: MeterProviderLike | undefined
  poolName: string
  /**
   * `db.operation.name` may be read from a raw statement's first word: not when the registration
   * allows several statements in one (`allowUnsafe.multipleStatements`), where the first word names
   * only the first of them.
   */
  operationFromText: boolean
}

// The description and the public type name the same options (refused keys aside): a key added
// to one and not the other fails to compile.
type SameKeys<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
type Holds<Checks extends readonly true[]> = Checks
export type DescribesEveryOption = Holds<[
  SameKeys<Exclude<keyof typeof PLUGIN_OPTIONS, 'connectionPool' | 'dialect'>, keyof ForkSafeDbOptions>,
  SameKeys<Exclude<keyof typeof POOL_OPTIONS, 'name' | 'refreshIdle' | 'returnToHead' | 'priorityRange'>, keyof ForkSafeDbPoolOptions>
]>

const accepted = (table: OptionTable, knex: boolean): string[] =>
  Object.keys(table).filter((key) => table[key].refused === undefined && (table[key].knex === true) === knex)

/** The plugin's own options (documented in docs/options.md); knex's own are KNEX_KEYS. */
export const PLUGIN_KEYS: readonly string[] = accepted(PLUGIN_OPTIONS, false)
/** knex's top-level keys the plugin accepts and passes on. */
export const KNEX_KEYS: readonly string[] = accepted(PLUGIN_OPTIONS, true)
/** The pool's sizes and timings, which the plugin checks. */
export const POOL_KEYS = accepted(POOL_OPTIONS, false) as ReadonlyArray<keyof ResolvedPool>
/** knex's pool hooks, passed through. */
export const KNEX_POOL_KEYS = accepted(POOL_OPTIONS, true) as ReadonlyArray<'afterCreate' | 'validate' | 'log' | 'propagateCreateError'>
export const BUDGET_KEYS = Object.keys(BUDGET_OPTIONS) as ReadonlyArray<keyof typeof BUDGET_OPTIONS>

/** A few of the defaults by name, as the description gives them. */
export const DEFAULTS = {
  decorator: PLUGIN_OPTIONS.decorator.default,
  pool: { min: 2, max: POOL_OPTIONS.max.default, acquireTimeoutMillis: 5000 },
  checkAfterIdleMillis: PLUGIN_OPTIONS.checkAfterIdleMillis.default,
  pingAfterIdleMillis: PLUGIN_OPTIONS.pingAfterIdleMillis.default,
  queryTimeoutMillis: PLUGIN_OPTIONS.queryTimeoutMillis.default,
  closeTimeoutMillis: PLUGIN_OPTIONS.closeTimeoutMillis.default,
  warmupConcurrency: PLUGIN_OPTIONS.warmupConcurrency.default,
  warmupJitterMillis: PLUGIN_OPTIONS.warmupJitterMillis.default
} as const

const reader: Reader = { ErrorType: FST_FORK_SAFE_DB_INVALID_OPTION, prefix: '', root: 'options.' }

/** Validates the plugin's options synchronously; throws a coded error on the first problem. */
export function resolveOptions (options: unknown): ResolvedOptions {
  if (!isPlainObject(options)) throw new FST_FORK_SAFE_DB_INVALID_OPTION(`options must be an object, got ${describeValue(options)}`)
  const read = readOptions(PLUGIN_OPTIONS, options, reader)
  const { afterCreate, validate, log, propagateCreateError: _alwaysTrue, ...pool } = read.pool as ResolvedPool & ForkSafeDbPoolOptions
  const knex: Record<string, unknown> = {}
  for (const key of KNEX_KEYS) {
    // client, log and compileSqlOnError are the plugin's to set on knex; the rest passes as given.
    if (key !== 'client' && key !== 'log' && key !== 'compileSqlOnError' && read[key] !== undefined) knex[key] = read[key]
  }
  const secrets: string[] = []
  const connection = resolveConnection(read.connection, read.allowUnsafe as UnsafeOptIns, secrets)

  return {
    decorator: read.decorator as string,
    connection,
    hostPolicy: read.hostPolicy as HostPolicyOption,
    role: read.role as HostRoleOption,
    secrets,
    pool: withoutUnset(pool),
    poolHooks: { afterCreate: afterCreate as AfterCreate | undefined, validate, log },
    knex: knex as KnexPassThrough,
    knexLog: read.log as Knex.Logger | undefined,
    warmup: read.warmup as number,
    allowColdStart: read.allowColdStart as boolean,
    checkAfterIdleMillis: read.checkAfterIdleMillis as number,
    pingAfterIdleMillis: read.pingAfterIdleMillis as number,
    queryTimeoutMillis: read.queryTimeoutMillis as number,
    maxPendingAcquires: read.maxPendingAcquires as number,
    closeTimeoutMillis: read.closeTimeoutMillis as number,
    budget: resolveBudget(read.budget as Omit<ResolvedBudget, 'workersFrom' | 'explicitMax' | 'explicitMin'> | undefined, options),
    warmupConcurrency: read.warmupConcurrency as number,
    warmupJitterMillis: read.warmupJitterMillis as number,
    ...resolveReplicaLag(read),
    metrics: resolveMetrics(read.metrics as ForkSafeDbOptions['metrics'], read.decorator as string, (read.allowUnsafe as UnsafeOptIns).multipleStatements !== true),
    leakDetectionThresholdMillis: read.leakDetectionThresholdMillis as number,
    slowQueryMillis: read.slowQueryMillis as number
  }
}

/** `metrics` as given: off, the global provider, a provider, or `{ meterProvider, poolName }`. */
function resolveMetrics (metrics: ForkSafeDbOptions['metrics'], decorator: string, operationFromText: boolean): ResolvedMetrics | undefined {
  if (metrics === undefined || metrics === false) return undefined
  if (metrics === true) return { meterProvider: undefined, poolName: decorator, operationFromText }
  if (typeof (metrics as MeterProviderLike).getMeter === 'function') return { meterProvider: metrics as MeterProviderLike, poolName: decorator, operationFromText }
  const { meterProvider, poolName } = metrics as MetricsOptions
  return { meterProvider, poolName: poolName ?? decorator, operationFromText }
}

/** The lag guard's options: a fallback needs the guard, and must be another registration. */
function resolveReplicaLag (read: Record<string, unknown>): Pick<ResolvedOptions, 'maxReplicaLagSeconds' | 'replicaLagCheckMillis' | 'replicaLagFallback'> {
  const maxReplicaLagSeconds = read.maxReplicaLagSeconds as number | undefined
  const replicaLagFallback = read.replicaLagFallback as string | undefined
  if (replicaLagFallback !== undefined && maxReplicaLagSeconds === undefined) {
    throw new FST_FORK_SAFE_DB_INVALID_OPTION('replicaLagFallback needs maxReplicaLagSeconds (the lag guard decides when to fall back), got maxReplicaLagSeconds left out')
  }
  if (replicaLagFallback !== undefined && replicaLagFallback === read.decorator) {
    throw new FST_FORK_SAFE_DB_INVALID_OPTION(`replicaLagFallback must name another registration than this one, got \`${replicaLagFallback}\` (this registration's decorator)`)
  }
  return { maxReplicaLagSeconds, replicaLagCheckMillis: read.replicaLagCheckMillis as number, replicaLagFallback }
}

/** The budget as read, with where its worker count came from and what the user set on the pool. */
function resolveBudget (budget: Omit<ResolvedBudget, 'workersFrom' | 'explicitMax' | 'explicitMin'> | undefined, options: Record<string, unknown>): ResolvedBudget | undefined {
  if (budget === undefined) return undefined
  const given = options.budget as Record<string, unknown>
  const pool = isPlainObject(options.pool) ? options.pool : {}
  return {
    ...budget,
    workersFrom: given.workers === undefined ? workersFromEnvironment().from : 'option',
    explicitMax: pool.max !== undefined,
    explicitMin: pool.min !== undefined
  }
}

/** tarn's own defaults stand for the timings left out: they are not passed at all. */
function withoutUnset (pool: Record<string, unknown>): ResolvedPool {
  return Object.fromEntries(Object.entries(pool).filter(([, value]) => value !== undefined)) as ResolvedPool
}
