import type { Knex } from 'knex'
import type { ConnectionOptions } from 'mysql2'
import { BUDGET_DEFAULTS, workersFromEnvironment, type ConnectionBudgetOptions, type ResolvedBudget } from './budget'
import { resolveConnection, UNSAFE_KEYS, type ConnectionProvider, type ResolvedConnection, type UnsafeOptIns } from './connection'
import { FST_FORK_SAFE_DB_INVALID_OPTION } from '../errors'
import { checkKnexLog, checkKnexPoolOptions, KNEX_KEYS, KNEX_POOL_KEYS, resolveKnexConfig, type KnexPassThrough } from './knex-config'
import { describeValue, expectInteger, expectKnownKeys, isPlainObject } from './validate'

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
  /** `mysql://user:password@host:3306/database`, a mysql2 connection object, or a function returning one (knex's rotating credentials). */
  connection: string | ConnectionOptions | ConnectionProvider
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
}

/** Pool sizes and timings, validated; acquireTimeoutMillis is the one knex will apply. */
export type ResolvedPool = Required<Pick<ForkSafeDbPoolOptions, 'min' | 'max' | 'acquireTimeoutMillis'>> &
  Omit<ForkSafeDbPoolOptions, 'afterCreate' | 'validate' | 'log' | 'propagateCreateError'>

/** Options after validation and defaults; what the pool manager works from. */
export interface ResolvedOptions {
  decorator: string
  connection: ResolvedConnection
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
}

/** The plugin's options (documented under Options); knex's own are KNEX_KEYS. */
export const PLUGIN_KEYS = [
  'connection', 'pool', 'warmup', 'allowColdStart', 'decorator', 'checkAfterIdleMillis', 'pingAfterIdleMillis', 'queryTimeoutMillis',
  'maxPendingAcquires', 'closeTimeoutMillis', 'allowUnsafe', 'budget', 'warmupConcurrency', 'warmupJitterMillis'
] as const
export { KNEX_KEYS, KNEX_POOL_KEYS }
export type { ResolvedBudget }
export const BUDGET_KEYS = ['workers', 'total', 'reserve', 'onExceed'] as const
const POOL_MILLISECOND_KEYS = [
  'acquireTimeoutMillis', 'createTimeoutMillis', 'destroyTimeoutMillis', 'idleTimeoutMillis',
  'reapIntervalMillis', 'createRetryIntervalMillis', 'maxConnectionLifetimeMillis', 'maxConnectionLifetimeJitterMillis'
] as const
export const POOL_KEYS = ['min', 'max', ...POOL_MILLISECOND_KEYS] as const
const IDENTIFIER = /^[A-Za-z_$][\w$]*$/

export const DEFAULTS = {
  decorator: 'db',
  pool: { min: 2, max: 10, acquireTimeoutMillis: 5000 },
  maxConnectionLifetimeMillis: 30 * 60_000,
  lifetimeJitterFraction: 0.1,
  checkAfterIdleMillis: 0,
  pingAfterIdleMillis: 30_000,
  queryTimeoutMillis: 30_000,
  pendingAcquiresPerConnection: 4,
  closeTimeoutMillis: 10_000,
  warmupConcurrency: 2,
  warmupJitterMillis: 0
} as const

const invalid = (message: string) => new FST_FORK_SAFE_DB_INVALID_OPTION(message)

/** Validates the plugin's options synchronously; throws a coded error on the first problem. */
export function resolveOptions (options: unknown): ResolvedOptions {
  if (!isPlainObject(options)) throw invalid(`options must be an object, got ${describeValue(options)}`)
  expectKnownKeys(FST_FORK_SAFE_DB_INVALID_OPTION, 'options', options, [...PLUGIN_KEYS, ...KNEX_KEYS, 'connectionPool', 'dialect'])
  const knex = resolveKnexConfig(options)
  const knexLog = checkKnexLog(options.log)

  const decorator = options.decorator ?? DEFAULTS.decorator
  if (typeof decorator !== 'string' || !IDENTIFIER.test(decorator)) {
    throw invalid(`decorator must be an identifier such as "db" or "replica", got ${describeValue(decorator)}`)
  }
  const allowUnsafe = resolveAllowUnsafe(options.allowUnsafe)
  const { pool, hooks: poolHooks } = resolvePool(options.pool, knex.acquireConnectionTimeout)
  const warmup = resolveWarmup(options.warmup, pool)
  const allowColdStart = options.allowColdStart ?? false
  if (typeof allowColdStart !== 'boolean') throw invalid(`allowColdStart must be a boolean, got ${describeValue(allowColdStart)}`)
  const checkAfterIdleMillis = options.checkAfterIdleMillis ?? DEFAULTS.checkAfterIdleMillis
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'checkAfterIdleMillis', checkAfterIdleMillis, 0, Number.MAX_SAFE_INTEGER, 'a non-negative integer (milliseconds)')
  const pingAfterIdleMillis = options.pingAfterIdleMillis ?? DEFAULTS.pingAfterIdleMillis
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'pingAfterIdleMillis', pingAfterIdleMillis, 0, Number.MAX_SAFE_INTEGER, 'a non-negative integer (milliseconds)')

  const queryTimeoutMillis = options.queryTimeoutMillis ?? DEFAULTS.queryTimeoutMillis
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'queryTimeoutMillis', queryTimeoutMillis, 0, Number.MAX_SAFE_INTEGER, 'a non-negative integer (milliseconds, 0 = off)')
  const maxPendingAcquires = options.maxPendingAcquires ?? DEFAULTS.pendingAcquiresPerConnection * pool.max
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'maxPendingAcquires', maxPendingAcquires, 0)
  const closeTimeoutMillis = options.closeTimeoutMillis ?? DEFAULTS.closeTimeoutMillis
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'closeTimeoutMillis', closeTimeoutMillis, 1, Number.MAX_SAFE_INTEGER, 'a positive integer (milliseconds)')

  const budget = resolveBudget(options.budget, options.pool)
  const warmupConcurrency = options.warmupConcurrency ?? DEFAULTS.warmupConcurrency
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'warmupConcurrency', warmupConcurrency, 1)
  const warmupJitterMillis = options.warmupJitterMillis ?? DEFAULTS.warmupJitterMillis
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'warmupJitterMillis', warmupJitterMillis, 0, Number.MAX_SAFE_INTEGER, 'a non-negative integer (milliseconds)')

  if (options.connection === undefined) {
    throw invalid('connection is required: a URL like mysql://user:password@host:3306/database, a mysql2 connection object or a function returning one')
  }
  const secrets: string[] = []
  const connection = resolveConnection(options.connection, allowUnsafe, secrets)

  return {
    decorator,
    connection,
    secrets,
    pool,
    poolHooks,
    knex,
    knexLog,
    warmup,
    allowColdStart,
    checkAfterIdleMillis,
    pingAfterIdleMillis,
    queryTimeoutMillis,
    maxPendingAcquires,
    closeTimeoutMillis,
    budget,
    warmupConcurrency,
    warmupJitterMillis
  }
}

function resolveBudget (budget: unknown, pool: unknown): ResolvedBudget | undefined {
  if (budget === undefined) return undefined
  if (!isPlainObject(budget)) throw invalid(`budget must be an object, got ${describeValue(budget)}`)
  expectKnownKeys(FST_FORK_SAFE_DB_INVALID_OPTION, 'budget', budget, BUDGET_KEYS)
  const fromEnvironment = workersFromEnvironment()
  const workers = budget.workers ?? fromEnvironment.workers
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'budget.workers', workers, 1)
  const total = budget.total ?? BUDGET_DEFAULTS.total
  if (total !== 'server') expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'budget.total', total, 1, Number.MAX_SAFE_INTEGER, '\'server\' or a positive integer')
  const reserve = budget.reserve ?? BUDGET_DEFAULTS.reserve
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'budget.reserve', reserve, 0)
  const onExceed = budget.onExceed ?? BUDGET_DEFAULTS.onExceed
  if (onExceed !== 'warn' && onExceed !== 'fail') throw invalid(`budget.onExceed must be 'warn' or 'fail', got ${describeValue(onExceed)}`)
  const poolOptions = isPlainObject(pool) ? pool : {}
  return {
    workers,
    workersFrom: budget.workers === undefined ? fromEnvironment.from : 'option',
    total,
    reserve,
    onExceed,
    explicitMax: poolOptions.max !== undefined,
    explicitMin: poolOptions.min !== undefined
  }
}

function resolvePool (pool: unknown, acquireConnectionTimeout: number | undefined): { pool: ResolvedPool, hooks: ResolvedOptions['poolHooks'] } {
  // knex builds its default pool for `pool: null` too.
  if (pool === undefined || pool === null) return resolvePool({}, acquireConnectionTimeout)
  if (!isPlainObject(pool)) throw invalid(`pool must be an object, got ${describeValue(pool)}`)
  checkKnexPoolOptions(pool)
  expectKnownKeys(FST_FORK_SAFE_DB_INVALID_OPTION, 'pool', pool, [...POOL_KEYS, ...KNEX_POOL_KEYS])
  const { afterCreate, validate, log, propagateCreateError: _alwaysTrue, ...sizes } = pool
  const resolved = { ...DEFAULTS.pool, ...sizes } as ResolvedPool
  // knex applies the smaller of acquireConnectionTimeout and pool.acquireTimeoutMillis; the
  // plugin's 5 s default only stands in when neither is set.
  const given = [sizes.acquireTimeoutMillis, acquireConnectionTimeout].filter((value) => value !== undefined)
  if (given.length > 0 && given.every((value) => typeof value === 'number')) resolved.acquireTimeoutMillis = Math.min(...(given as number[]))
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'pool.max', resolved.max, 1)
  // `{ max: 1 }` alone means a pool of one, not an error about the default min.
  if (pool.min === undefined) resolved.min = Math.min(DEFAULTS.pool.min, resolved.max)
  resolved.maxConnectionLifetimeMillis ??= DEFAULTS.maxConnectionLifetimeMillis
  resolved.maxConnectionLifetimeJitterMillis ??= Math.round(resolved.maxConnectionLifetimeMillis * DEFAULTS.lifetimeJitterFraction)
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'pool.min', resolved.min, 0, resolved.max, `an integer from 0 to pool.max (${resolved.max})`)
  for (const key of POOL_MILLISECOND_KEYS) {
    if (resolved[key] === undefined) continue
    // A spread of 0 is a choice (all connections expire on time); every other setting must be positive.
    const [min, expected] = key === 'maxConnectionLifetimeJitterMillis' ? [0, 'a non-negative integer (milliseconds)'] : [1, 'a positive integer (milliseconds)']
    expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, `pool.${key}`, resolved[key], min, Number.MAX_SAFE_INTEGER, expected)
  }
  // A null hook is no hook, as in knex (checkKnexPoolOptions has let only functions and nulls through).
  const hook = <T>(value: unknown): T | undefined => (value ?? undefined) as T | undefined
  return {
    pool: resolved,
    hooks: { afterCreate: hook<AfterCreate>(afterCreate), validate: hook<ForkSafeDbPoolOptions['validate']>(validate), log: hook<ForkSafeDbPoolOptions['log']>(log) }
  }
}

function resolveWarmup (warmup: unknown, pool: ResolvedPool): number {
  if (warmup === undefined || warmup === true) return pool.min
  if (warmup === false) return 0
  expectInteger(FST_FORK_SAFE_DB_INVALID_OPTION, 'warmup', warmup, 0, pool.max, `a boolean or an integer from 0 to pool.max (${pool.max})`)
  return warmup
}

function resolveAllowUnsafe (allowUnsafe: unknown): UnsafeOptIns {
  if (allowUnsafe === undefined) return {}
  if (!isPlainObject(allowUnsafe)) throw invalid(`allowUnsafe must be an object, got ${describeValue(allowUnsafe)}`)
  expectKnownKeys(FST_FORK_SAFE_DB_INVALID_OPTION, 'allowUnsafe', allowUnsafe, UNSAFE_KEYS)
  for (const [key, value] of Object.entries(allowUnsafe)) {
    if (typeof value !== 'boolean') throw invalid(`allowUnsafe.${key} must be a boolean, got ${describeValue(value)}`)
  }
  return { ...allowUnsafe }
}
