import { FST_FORK_SAFE_DB_INVALID_OPTION } from '../errors'

// The worker helper's options, checked at registration like the plugin's: the message names
// the option, what was expected and what arrived.

/** One request the warm-up sends to the app before it is exposed. */
export interface WarmupRequest {
  /** Default GET. */
  method?: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'OPTIONS'
  url: string
  headers?: Record<string, string>
  /** Sent as JSON. */
  body?: unknown
}

export interface ForkSafeWorkerOptions {
  /** After the worker stops accepting, how long open connections get to close on their own. Default 5000. */
  drainMillis?: number
  /** How long `fastify.close()` may take: in-flight requests, then onClose hooks (the pool's). Default 10000. */
  closeMillis?: number
  /** How long to wait for the cluster primary to confirm it will hand this worker no more connections. Default 5000. */
  disconnectMillis?: number
  /** Signals on which the worker retires, then exits. Default `['SIGINT', 'SIGTERM']`. */
  signals?: NodeJS.Signals[]
  /** Signals that are logged and otherwise ignored. Default `['SIGHUP']` in a cluster worker, else none. */
  ignoreSignals?: NodeJS.Signals[]
  /** Requests sent over a private loopback listener once the app is ready, before it listens. Default: none. */
  warmup?: { requests: WarmupRequest[], rounds?: number, concurrency?: number, maxMillis?: number }
}

export interface ResolvedWorkerOptions {
  drainMillis: number
  closeMillis: number
  disconnectMillis: number
  signals: NodeJS.Signals[]
  ignoreSignals: NodeJS.Signals[]
  warmup: { requests: WarmupRequest[], rounds: number, concurrency: number, maxMillis: number }
}

export const WORKER_DEFAULTS = { drainMillis: 5000, closeMillis: 10_000, disconnectMillis: 5000, rounds: 20, warmupConcurrency: 2, warmupMaxMillis: 3000 }
const KEYS = ['drainMillis', 'closeMillis', 'disconnectMillis', 'signals', 'ignoreSignals', 'warmup']
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']
const MAX_TIMER_MILLIS = 2 ** 31 - 1

function invalid (message: string): never {
  throw new FST_FORK_SAFE_DB_INVALID_OPTION(`worker ${message}`)
}

function describe (value: unknown): string {
  if (typeof value === 'string') return `\`${value}\` (string)`
  if (typeof value === 'number' || typeof value === 'boolean') return `\`${String(value)}\` (${typeof value})`
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value
}

function millis (name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_TIMER_MILLIS) {
    invalid(`option ${name} must be an integer from 0 to ${MAX_TIMER_MILLIS}, got ${describe(value)}`)
  }
  return value
}

function signalList (name: string, value: unknown, fallback: NodeJS.Signals[]): NodeJS.Signals[] {
  if (value === undefined) return fallback
  if (!Array.isArray(value) || !value.every((signal) => typeof signal === 'string' && /^SIG[A-Z0-9]+$/.test(signal))) {
    invalid(`option ${name} must be an array of signal names such as 'SIGTERM', got ${describe(value)}`)
  }
  return [...value] as NodeJS.Signals[]
}

function warmupRequests (value: unknown): ResolvedWorkerOptions['warmup'] {
  if (value === undefined) return { requests: [], rounds: WORKER_DEFAULTS.rounds, concurrency: WORKER_DEFAULTS.warmupConcurrency, maxMillis: WORKER_DEFAULTS.warmupMaxMillis }
  if (value === null || typeof value !== 'object' || !Array.isArray((value as { requests?: unknown }).requests)) {
    invalid(`option warmup must be { requests: [{ url }], rounds?, concurrency?, maxMillis? }, got ${describe(value)}`)
  }
  for (const key of Object.keys(value)) {
    if (!['requests', 'rounds', 'concurrency', 'maxMillis'].includes(key)) invalid(`option warmup.${key} is not a known option; expected one of: requests, rounds, concurrency, maxMillis`)
  }
  const { requests, rounds = WORKER_DEFAULTS.rounds, concurrency = WORKER_DEFAULTS.warmupConcurrency, maxMillis: rawMaxMillis } =
    value as { requests: unknown[], rounds?: unknown, concurrency?: unknown, maxMillis?: unknown }
  if (typeof rounds !== 'number' || !Number.isInteger(rounds) || rounds < 1 || rounds > 10_000) {
    invalid(`option warmup.rounds must be an integer from 1 to 10000, got ${describe(rounds)}`)
  }
  if (typeof concurrency !== 'number' || !Number.isInteger(concurrency) || concurrency < 1 || concurrency > 100) {
    invalid(`option warmup.concurrency must be an integer from 1 to 100, got ${describe(concurrency)}`)
  }
  const maxMillis = millis('warmup.maxMillis', rawMaxMillis, WORKER_DEFAULTS.warmupMaxMillis)
  requests.forEach((request, index) => {
    const { url, method = 'GET' } = (request ?? {}) as { url?: unknown, method?: unknown }
    if (typeof url !== 'string' || !url.startsWith('/')) invalid(`option warmup.requests[${index}].url must be a path starting with /, got ${describe(url)}`)
    if (typeof method !== 'string' || !METHODS.includes(method)) invalid(`option warmup.requests[${index}].method must be one of ${METHODS.join(', ')}, got ${describe(method)}`)
  })
  // Copied, so that changing the caller's object later changes nothing here.
  return { requests: (requests as WarmupRequest[]).map((request) => ({ ...request })), rounds, concurrency, maxMillis }
}

export function resolveWorkerOptions (options: ForkSafeWorkerOptions | undefined, isClusterWorker: boolean): ResolvedWorkerOptions {
  const raw = (options ?? {}) as Record<string, unknown>
  for (const key of Object.keys(raw)) {
    if (!KEYS.includes(key)) invalid(`option ${key} is not a known option; expected one of: ${KEYS.join(', ')}`)
  }
  return {
    drainMillis: millis('drainMillis', raw.drainMillis, WORKER_DEFAULTS.drainMillis),
    closeMillis: millis('closeMillis', raw.closeMillis, WORKER_DEFAULTS.closeMillis),
    disconnectMillis: millis('disconnectMillis', raw.disconnectMillis, WORKER_DEFAULTS.disconnectMillis),
    signals: signalList('signals', raw.signals, ['SIGINT', 'SIGTERM']),
    ignoreSignals: signalList('ignoreSignals', raw.ignoreSignals, isClusterWorker ? ['SIGHUP'] : []),
    warmup: warmupRequests(raw.warmup)
  }
}
