import { availableParallelism } from 'node:os'
import type { LoggerOptions } from 'pino'

// Settings from the environment, read by the primary and by every worker.

export const EXAMPLE_DATABASE = 'fork_safe_db_example'

function integer (name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  if (!/^\d+$/.test(raw)) throw new Error(`${name} must be a whole number, got "${raw}"`)
  return Number(raw)
}

// The server on 127.0.0.1:3306 as root by default; a URL that names no database gets the
// example's own, which the primary creates, so the example never writes into another one.
const url = new URL(process.env.MYSQL_URL || 'mysql://root@127.0.0.1:3306')
if (url.pathname.length <= 1) url.pathname = `/${EXAMPLE_DATABASE}`

export const config = {
  port: integer('PORT', 3000),
  host: process.env.HOST ?? '127.0.0.1',
  workers: integer('WORKERS', availableParallelism()),
  mysqlUrl: url.toString(),
  /** For logs: never the password. */
  database: `${decodeURIComponent(url.username)}@${url.host}${url.pathname}`,
  /** Responses after which a worker asks to be replaced; 0 never. */
  maxRequests: integer('MAX_REQUESTS', 0),
  pool: { min: integer('DB_POOL_MIN', 2), max: integer('DB_POOL_MAX', 10) },
  /** Replacements that run next to the workers: 1 under the example's primary, 2 under pm2's reload. */
  overlap: integer('OVERLAP', 1),
  /**
   * The primary's GET /metrics, for every worker: on its own listener, loopback by default (never
   * the app's port). METRICS_PORT=0 turns metrics off, in the workers too. 9464 is the port of
   * OpenTelemetry's Prometheus exporter.
   */
  metrics: {
    host: process.env.METRICS_HOST ?? '127.0.0.1',
    port: integer('METRICS_PORT', 9464),
    /** How long a scrape waits for the workers: well under Prometheus' default scrape timeout of 10 s. */
    timeoutMillis: integer('METRICS_TIMEOUT_MILLIS', 1000)
  }
}

/** pino's options (Fastify takes the same): readable lines on a terminal, JSON lines anywhere else. */
export function loggerOptions (name: string): LoggerOptions {
  const pretty = process.stdout.isTTY === true
  return {
    name,
    level: process.env.LOG_LEVEL ?? 'info',
    ...(pretty ? { transport: { target: 'pino-pretty', options: { ignore: 'hostname', translateTime: 'SYS:HH:MM:ss.l', singleLine: true } } } : {})
  }
}
