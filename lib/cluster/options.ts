import { availableParallelism } from 'node:os'
import type * as Errors from '../errors'

// startCluster()'s options, checked when it is called, with messages like the plugin's: the
// option, what was expected, what arrived.

/** What the primary logs through: pino's and Fastify's loggers fit. */
export interface ClusterLogger {
  info: (details: object, message: string) => void
  warn: (details: object, message: string) => void
  error: (details: object, message: string) => void
}

export interface ClusterOptions {
  /** Workers to keep serving. Default: `os.availableParallelism()`. */
  workers?: number
  /** The worker's script. Default: the primary's own (`process.argv[1]`), as in node:cluster. */
  exec?: string
  /** Environment of every worker, on top of the primary's. */
  env?: Record<string, string>
  /** How long a new worker may take to listen (warm) before it is killed as failed. Default 60000. */
  startMillis?: number
  /** How long a retiring worker may take to exit before it is killed. Default 30000. */
  stopMillis?: number
  /** Signals on which the primary drains every worker and stops, starting none. Default `['SIGINT', 'SIGTERM', 'SIGHUP']`. */
  stopSignals?: NodeJS.Signals[]
  /** Signals on which it replaces every worker, one at a time. Default `['SIGUSR2']`. */
  rollSignals?: NodeJS.Signals[]
  /** Where the primary logs (a pino logger, say). Default: nowhere. */
  logger?: ClusterLogger
}

export interface ResolvedClusterOptions {
  workers: number
  exec: string | undefined
  env: Record<string, string>
  startMillis: number
  stopMillis: number
  stopSignals: NodeJS.Signals[]
  rollSignals: NodeJS.Signals[]
  logger: ClusterLogger
}

export const CLUSTER_DEFAULTS = { startMillis: 60_000, stopMillis: 30_000, stopSignals: ['SIGINT', 'SIGTERM', 'SIGHUP'], rollSignals: ['SIGUSR2'] } as const
const KEYS = ['workers', 'exec', 'env', 'startMillis', 'stopMillis', 'stopSignals', 'rollSignals', 'logger']
const MAX_TIMER_MILLIS = 2 ** 31 - 1
const MAX_WORKERS = 1024
const silent = (): void => {}

/** lib/errors.ts loads knex, which the primary never needs: it is loaded only to throw. */
function errors (): typeof Errors {
  return require('../errors') as typeof Errors
}

function invalid (message: string): never {
  throw new (errors().FST_FORK_SAFE_DB_INVALID_OPTION)(`cluster option ${message}`)
}

function describe (value: unknown): string {
  if (typeof value === 'string') return `\`${value}\` (string)`
  if (typeof value === 'number' || typeof value === 'boolean') return `\`${String(value)}\` (${typeof value})`
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value
}

function integer (name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    invalid(`${name} must be an integer from ${min} to ${max}, got ${describe(value)}`)
  }
  return value
}

function signalList (name: string, value: unknown, fallback: readonly NodeJS.Signals[]): NodeJS.Signals[] {
  if (value === undefined) return [...fallback]
  if (!Array.isArray(value) || !value.every((signal) => typeof signal === 'string' && /^SIG[A-Z0-9]+$/.test(signal))) {
    invalid(`${name} must be an array of signal names such as 'SIGTERM', got ${describe(value)}`)
  }
  return [...value] as NodeJS.Signals[]
}

function environment (value: unknown): Record<string, string> {
  if (value === undefined) return {}
  if (value === null || typeof value !== 'object' || Array.isArray(value)) invalid(`env must be an object of strings, got ${describe(value)}`)
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') invalid(`env.${key} must be a string, got ${describe(entry)}`)
  }
  // Copied: changing the caller's object later changes nothing here.
  return { ...value as Record<string, string> }
}

function logger (value: unknown): ClusterLogger {
  if (value === undefined) return { info: silent, warn: silent, error: silent }
  const given = value as Partial<Record<keyof ClusterLogger, unknown>> | null
  if (given === null || typeof given !== 'object' || typeof given.info !== 'function' || typeof given.warn !== 'function' || typeof given.error !== 'function') {
    invalid(`logger must be an object with info, warn and error methods (a pino logger), got ${describe(value)}`)
  }
  // Called as methods (pino's read `this`), and never allowed to throw: a write to a terminal
  // that has closed (the SIGHUP case) fails, and the drain must go on all the same.
  const log = given as ClusterLogger
  const safely = (level: keyof ClusterLogger) => (details: object, message: string) => {
    try {
      log[level](details, message)
    } catch {}
  }
  return { info: safely('info'), warn: safely('warn'), error: safely('error') }
}

export function resolveClusterOptions (options: ClusterOptions | undefined): ResolvedClusterOptions {
  if (options !== undefined && (options === null || typeof options !== 'object')) invalid(`options must be an object, got ${describe(options)}`)
  const raw = (options ?? {}) as Record<string, unknown>
  for (const key of Object.keys(raw)) {
    if (!KEYS.includes(key)) invalid(`${key} is not a known option; expected one of: ${KEYS.join(', ')}`)
  }
  if (raw.exec !== undefined && (typeof raw.exec !== 'string' || raw.exec === '')) invalid(`exec must be the path of the worker's script, got ${describe(raw.exec)}`)
  return {
    workers: integer('workers', raw.workers, availableParallelism(), 1, MAX_WORKERS),
    exec: raw.exec as string | undefined,
    env: environment(raw.env),
    startMillis: integer('startMillis', raw.startMillis, CLUSTER_DEFAULTS.startMillis, 1, MAX_TIMER_MILLIS),
    stopMillis: integer('stopMillis', raw.stopMillis, CLUSTER_DEFAULTS.stopMillis, 1, MAX_TIMER_MILLIS),
    stopSignals: signalList('stopSignals', raw.stopSignals, CLUSTER_DEFAULTS.stopSignals),
    rollSignals: signalList('rollSignals', raw.rollSignals, CLUSTER_DEFAULTS.rollSignals),
    logger: logger(raw.logger)
  }
}

export function notPrimary (why: string): Error {
  return new (errors().FST_FORK_SAFE_DB_CLUSTER_NOT_PRIMARY)(why)
}
