import { FST_FORK_SAFE_DB_INVALID_OPTION } from '../errors'
import { WORKER_OPTIONS, WORKER_WARMUP_OPTIONS } from '../options/descriptions'
import { readOptions, type Reader } from '../options/validate'

// The worker helper's options, checked at registration like the plugin's, from the same kind of
// description (options/descriptions.ts): the message names the option, what was expected and
// what arrived.

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

// The description and the public type name the same options: a key added to one and not the
// other fails to compile.
type SameKeys<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false
type Holds<Checks extends readonly true[]> = Checks
export type DescribesEveryOption = Holds<[
  SameKeys<keyof typeof WORKER_OPTIONS, keyof ForkSafeWorkerOptions>,
  SameKeys<keyof typeof WORKER_WARMUP_OPTIONS, keyof NonNullable<ForkSafeWorkerOptions['warmup']>>
]>

const reader: Reader = { ErrorType: FST_FORK_SAFE_DB_INVALID_OPTION, prefix: 'worker option ', root: '' }

export function resolveWorkerOptions (options: ForkSafeWorkerOptions | undefined, isClusterWorker: boolean): ResolvedWorkerOptions {
  const read = readOptions(WORKER_OPTIONS, (options ?? {}) as Record<string, unknown>, reader) as Omit<ResolvedWorkerOptions, 'ignoreSignals'> & { ignoreSignals?: NodeJS.Signals[] }
  // A closing terminal sends SIGHUP to the whole group; in a cluster the primary acts on it.
  return { ...read, ignoreSignals: read.ignoreSignals ?? (isClusterWorker ? ['SIGHUP'] : []) }
}
