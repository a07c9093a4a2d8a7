import { availableParallelism } from 'node:os'

// The example's settings, all from the environment, checked once at start.

export interface ExampleConfig {
  port: number
  host: string
  workers: number
  /** Responses after which a worker is replaced (uWSGI's max-requests); 0 never recycles. */
  maxRequests: number
  /** Unset means: the local server, else a private throw-away one (see startDatabase). */
  mysqlUrl: string | undefined
  /** DB_WARMUP=false keeps pools lazy, to show what a cold first query costs. */
  warmup: boolean
  /** Per-worker pool size; keep `poolMin` at or above the concurrency one worker sees. */
  poolMin: number
  poolMax: number
  /** WARMUP_ROUNDS: real HTTP requests per route a worker sends itself before listening (0: none). */
  warmupRounds: number
  /** STARTUP_NICE: the CPU priority a worker starts at while others serve (19, the default, lowest; 0: unchanged). */
  startUpNice: number
}

function integer (name: string, fallback: number, min: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}, got "${raw}"`)
  return value
}

function niceValue (): number {
  const nice = integer('STARTUP_NICE', 19, 0)
  if (nice > 19) throw new Error(`STARTUP_NICE must be an integer from 0 to 19, got "${nice}"`)
  return nice
}

export function readConfig (): ExampleConfig {
  const warmup = process.env.DB_WARMUP ?? 'true'
  if (warmup !== 'true' && warmup !== 'false') throw new Error(`DB_WARMUP must be true or false, got "${warmup}"`)
  const poolMin = integer('DB_POOL_MIN', 2, 0)
  const poolMax = integer('DB_POOL_MAX', Math.max(10, poolMin), 1)
  if (poolMin > poolMax) throw new Error(`DB_POOL_MIN (${poolMin}) must not exceed DB_POOL_MAX (${poolMax})`)
  return {
    port: integer('PORT', 3000, 0),
    host: process.env.HOST ?? '127.0.0.1',
    workers: integer('WORKERS', availableParallelism(), 1),
    maxRequests: integer('MAX_REQUESTS', 0, 0),
    mysqlUrl: process.env.MYSQL_URL === '' ? undefined : process.env.MYSQL_URL,
    warmup: warmup === 'true',
    poolMin,
    poolMax,
    warmupRounds: integer('WARMUP_ROUNDS', 20, 0),
    startUpNice: niceValue()
  }
}
