// The cluster app's settings, from the environment the harness gives it.

export interface AppConfig {
  port: number
  workers: number
  /** Responses after which a worker is replaced (uWSGI's max-requests); 0 never recycles. */
  maxRequests: number
  mysqlUrl: string
  /** 'plugin': fastify-fork-safe-db; 'knex': the baseline, a plain knex in a closure, lazy. */
  pool: 'plugin' | 'knex'
  /** The plugin's `warmup` option (its pool opened before listening). */
  warmup: boolean
  poolMin: number
  poolMax: number
  /** Rounds of warm-up requests (the worker helper's `warmup.rounds`); 0: no request-path warm-up. */
  warmupRounds: number
}

function integer (name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < 0) throw new Error(`${name} must be an integer >= 0, got "${raw}"`)
  return value
}

export function readConfig (): AppConfig {
  const mysqlUrl = process.env.MYSQL_URL
  if (mysqlUrl === undefined || mysqlUrl === '') throw new Error('MYSQL_URL is required')
  const pool = process.env.APP_POOL ?? 'plugin'
  if (pool !== 'plugin' && pool !== 'knex') throw new Error(`APP_POOL must be plugin or knex, got "${pool}"`)
  const poolMin = integer('DB_POOL_MIN', 2)
  return {
    port: integer('PORT', 3000),
    workers: integer('WORKERS', 2),
    maxRequests: integer('MAX_REQUESTS', 0),
    mysqlUrl,
    pool,
    warmup: process.env.DB_WARMUP !== 'false',
    poolMin,
    poolMax: Math.max(10, poolMin),
    warmupRounds: integer('WARMUP_ROUNDS', 20)
  }
}
