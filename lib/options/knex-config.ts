import type { Knex } from 'knex'
import { FST_FORK_SAFE_DB_INVALID_OPTION, FST_FORK_SAFE_DB_UNSAFE_OPTION } from '../errors'
import { describeValue, isPlainObject } from './validate'

// knex's own configuration, passed to knex under knex's own names, so an existing knex
// configuration moves over unchanged. Each key is checked for its type here; what knex does with
// it is knex's business. Only what would break one of the plugin's guarantees is refused, and the
// message says which guarantee.

/** knex's options the plugin passes through as they are. */
export type KnexPassThrough = Pick<Knex.Config,
  'version' | 'debug' | 'postProcessResponse' | 'wrapIdentifier' | 'useNullAsDefault' | 'asyncStackTraces' | 'migrations' | 'seeds' | 'acquireConnectionTimeout'
> & {
  /** knex's `userParams`: available as `knex.userParams`, and to wrapIdentifier / postProcessResponse. */
  userParams?: Record<string, unknown>
}

type Check = 'function' | 'boolean' | 'object' | 'string' | 'millis'

const PASSED: Record<keyof KnexPassThrough, Check> = {
  version: 'string',
  debug: 'boolean',
  postProcessResponse: 'function',
  wrapIdentifier: 'function',
  useNullAsDefault: 'boolean',
  asyncStackTraces: 'boolean',
  migrations: 'object',
  seeds: 'object',
  acquireConnectionTimeout: 'millis',
  userParams: 'object'
}

/** knex's top-level keys the plugin accepts, besides `connection` and `pool`. */
export const KNEX_KEYS = ['client', 'log', 'compileSqlOnError', ...Object.keys(PASSED)] as readonly string[]

/** knex's pool keys (besides the sizes and timings the plugin validates itself). */
export const KNEX_POOL_KEYS = ['afterCreate', 'validate', 'log', 'propagateCreateError'] as const

// Keys knex's types list that would break a guarantee, or that tarn itself rejects.
const REFUSED: Record<string, string> = {
  connectionPool: 'an external pool may have been opened before the process forked and is not the plugin\'s to warm, check or drain; give `connection` and let the plugin build the pool in each process',
  dialect: 'the plugin is knex\'s mysql2 client; leave `dialect` out (or set `client: \'mysql2\'`)'
}
const REFUSED_POOL: Record<string, string> = {
  name: 'tarn (knex\'s pool) does not take it',
  refreshIdle: 'it is a generic-pool option tarn (knex\'s pool) does not take',
  returnToHead: 'it is a generic-pool option tarn (knex\'s pool) does not take',
  priorityRange: 'it is a generic-pool option tarn (knex\'s pool) does not take'
}

// knex tests these with `if (config.x)` (tarn: `opt.log || …`), so `null` is unset, as it is
// in a configuration copied from a stock `knex.client.config` (knex's own tests and migrations
// set `postProcessResponse` and `wrapIdentifier` back to null). Elsewhere null is not unset:
// `log: null` makes knex throw, and a null size or timing makes tarn throw (a null
// acquireConnectionTimeout becomes an acquire timeout of 0), so there it is refused as before.
const NULL_IS_UNSET = new Set([
  'client', 'dialect', 'connectionPool', 'compileSqlOnError', 'version', 'debug', 'postProcessResponse', 'wrapIdentifier',
  'useNullAsDefault', 'asyncStackTraces', 'migrations', 'seeds', 'userParams'
])
const POOL_NULL_IS_UNSET = new Set(['afterCreate', 'validate', 'log'])

/** Whether `options[key]` is left out: undefined, or null where knex treats null as unset. */
function isUnset (options: Record<string, unknown>, key: string): boolean {
  return options[key] === undefined || (options[key] === null && NULL_IS_UNSET.has(key))
}

/** Whether the pool option `pool[key]` is left out (knex's hooks take null as unset too). */
function isUnsetPoolOption (pool: Record<string, unknown>, key: string): boolean {
  return pool[key] === undefined || (pool[key] === null && POOL_NULL_IS_UNSET.has(key))
}

const invalid = (message: string) => new FST_FORK_SAFE_DB_INVALID_OPTION(message)

/** Checks knex's own top-level options in `options`; returns those to pass to knex. */
export function resolveKnexConfig (options: Record<string, unknown>): KnexPassThrough {
  for (const [key, why] of Object.entries(REFUSED)) {
    if (!isUnset(options, key)) throw invalid(`${key} is not supported: ${why}`)
  }
  const client = options.client
  if (!isUnset(options, 'client') && client !== 'mysql2') {
    throw invalid(`client must be 'mysql2' (the plugin extends knex's mysql2 client) or left out, got ${describeValue(client)}`)
  }
  if (!isUnset(options, 'compileSqlOnError') && options.compileSqlOnError !== false) {
    throw new FST_FORK_SAFE_DB_UNSAFE_OPTION(`compileSqlOnError: true puts bound values into error messages, which the plugin keeps out of responses and logs; leave it out, got ${describeValue(options.compileSqlOnError)}`)
  }
  const passed: Record<string, unknown> = {}
  for (const [key, check] of Object.entries(PASSED)) {
    const value = options[key]
    if (isUnset(options, key)) continue
    expectType(key, value, check)
    passed[key] = value
  }
  return passed as KnexPassThrough
}

/** Checks knex's own pool options; `propagateCreateError: false` is refused. */
export function checkKnexPoolOptions (pool: Record<string, unknown>): void {
  for (const [key, why] of Object.entries(REFUSED_POOL)) {
    if (pool[key] !== undefined) throw invalid(`pool.${key} is not supported: ${why}`)
  }
  for (const key of ['afterCreate', 'validate', 'log']) {
    if (!isUnsetPoolOption(pool, key)) expectType(`pool.${key}`, pool[key], 'function')
  }
  if (pool.propagateCreateError !== undefined && pool.propagateCreateError !== true) {
    throw invalid(`pool.propagateCreateError must be true or left out: with false a wrong password or an unreachable server would make every query wait for the acquire timeout instead of failing at once, got ${describeValue(pool.propagateCreateError)}`)
  }
}

/** Checks knex's `log` option: an object of functions (warn, error, deprecate, debug). */
export function checkKnexLog (log: unknown): Knex.Logger | undefined {
  if (log === undefined) return undefined
  if (!isPlainObject(log)) throw invalid(`log must be an object of functions (warn, error, deprecate, debug), got ${describeValue(log)}`)
  for (const level of ['warn', 'error', 'deprecate', 'debug']) {
    // knex's logger takes a null level as unset (`userFn != null`).
    if (log[level] !== undefined && log[level] !== null) expectType(`log.${level}`, log[level], 'function')
  }
  return log as Knex.Logger
}

function expectType (name: string, value: unknown, check: Check): void {
  const ok = {
    object: () => isPlainObject(value),
    millis: () => typeof value === 'number' && Number.isInteger(value) && value > 0,
    function: () => typeof value === 'function',
    boolean: () => typeof value === 'boolean',
    string: () => typeof value === 'string'
  }[check]()
  if (ok) return
  const expected = { function: 'a function', boolean: 'a boolean', object: 'an object', string: 'a string', millis: 'a positive integer (milliseconds)' }[check]
  throw invalid(`${name} must be ${expected}, got ${describeValue(value)}`)
}
