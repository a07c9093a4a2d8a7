import cluster, { type Worker } from 'node:cluster'
import { clusterMessage, clusterWord, WORKER_ENV } from './protocol'
import type { ResolvedClusterOptions } from './options'

// The cluster primary. It holds no database pool and runs none of the app. Its rules:
// - a replacement (a recycle a worker asked for, or a roll) must be listening, hence warm,
//   before the worker it replaces is told to retire: capacity never dips and no request waits
//   for a connect. One replacement at a time, so at most `workers + 1` processes hold a pool;
// - a worker that dies unasked is respawned, with backoff across consecutive crashes, so a
//   broken database does not turn into a fork storm;
// - on a stop signal (a closing terminal's SIGHUP included) every worker drains and exits, and
//   nothing is started or respawned any more;
// - every wait is bounded: a worker that does not listen within startMillis, or does not exit
//   within stopMillis of being told to retire, is killed.

const FIRST_BACKOFF_MILLIS = 250
const MAX_BACKOFF_MILLIS = 10_000
/** A worker that served this long before dying resets the crash count. */
const STABLE_MILLIS = 10_000

type State = 'starting' | 'serving' | 'retiring'

interface Entry {
  worker: Worker
  pid: number | undefined
  state: State
  /** The serving worker this one is to replace once it listens. */
  replaces: Entry | undefined
  forkedAt: number
  servingSince: number | undefined
  timer: NodeJS.Timeout | undefined
  exited: Promise<void>
}

export class ForkSafeCluster {
  /** Resolves true once `workers` workers listen, warm; false if close() began first. */
  readonly ready: Promise<boolean>
  /** Resolves once close() (or a stop signal) has drained every worker and all have exited. */
  readonly closed: Promise<void>
  readonly #options: ResolvedClusterOptions
  readonly #entries = new Set<Entry>()
  /** Serving workers waiting for their replacement, replaced one at a time in this order. */
  #queue: Entry[] = []
  /** The worker whose replacement is under way, until it has exited. */
  #replacing: Entry | undefined
  readonly #respawnTimers = new Set<NodeJS.Timeout>()
  #crashes = 0
  /** Workers still to fork at start: they follow the first once it listens. */
  #unforked: number
  #closing: Promise<void> | undefined
  #onReady: ((serving: boolean) => void) | undefined
  #onClosed: (() => void) | undefined
  readonly #signalHandlers: Array<[NodeJS.Signals, () => void]> = []

  constructor (options: ResolvedClusterOptions) {
    this.#options = options
    this.ready = new Promise((resolve) => { this.#onReady = resolve })
    this.closed = new Promise((resolve) => { this.#onClosed = resolve })
    for (const signal of options.stopSignals) this.#signalHandlers.push([signal, () => { this.close(signal).catch(() => {}) }])
    for (const signal of options.rollSignals) this.#signalHandlers.push([signal, () => { this.roll().catch(() => {}) }])
    for (const [signal, handler] of this.#signalHandlers) process.on(signal, handler)
    if (options.exec !== undefined) cluster.setupPrimary({ exec: options.exec })
    // The first worker starts alone and the others once it listens: the app answers as soon as
    // one worker is warm, instead of when several have shared the cores to load and warm up, and
    // a database that refuses connections fails one worker (then its respawns), not all at once.
    this.#unforked = options.workers - 1
    this.#fork(undefined)
  }

  /** The pids of the workers serving now (listening, warm, not retiring). */
  servingPids (): number[] {
    return [...this.#entries].filter((entry) => entry.state === 'serving').map((entry) => entry.pid ?? 0)
  }

  /**
   * Replaces every serving worker, one at a time, each replacement listening before its
   * predecessor retires. Resolves once every one of them has exited (replaced, or drained by a
   * close() that came meanwhile). Does nothing once close() has begun.
   */
  async roll (): Promise<void> {
    if (this.#closing !== undefined) return
    const serving = [...this.#entries].filter((entry) => entry.state === 'serving')
    this.#options.logger.info({ workers: serving.length }, 'rolling restart started')
    for (const entry of serving) this.#enqueue(entry)
    await Promise.all(serving.map((entry) => entry.exited))
    if (this.#closing === undefined) this.#options.logger.info({}, 'rolling restart finished')
  }

  /**
   * Drains every worker (each retires through fastify-fork-safe-db/worker) and resolves once all
   * have exited; starts and respawns nothing from the first moment. Idempotent.
   */
  close (reason = 'close() called'): Promise<void> {
    this.#closing ??= this.#close(reason)
    return this.#closing
  }

  async #close (reason: string): Promise<void> {
    this.#options.logger.info({ reason }, 'shutting down: draining every worker')
    this.#onReady?.(false)
    this.#onReady = undefined
    this.#queue = []
    for (const timer of this.#respawnTimers) clearTimeout(timer)
    this.#respawnTimers.clear()
    for (const entry of this.#entries) this.#retire(entry)
    await Promise.all([...this.#entries].map((entry) => entry.exited))
    for (const [signal, handler] of this.#signalHandlers) process.off(signal, handler)
    this.#onClosed?.()
  }

  #fork (replaces: Entry | undefined): void {
    const worker = cluster.fork({ ...this.#options.env, [WORKER_ENV]: '1' })
    const entry: Entry = {
      worker,
      pid: worker.process.pid,
      state: 'starting',
      replaces,
      forkedAt: performance.now(),
      servingSince: undefined,
      timer: undefined,
      exited: new Promise((resolve) => worker.once('exit', (code: number | null, signal: string | null) => {
        this.#onExit(entry, code, signal)
        resolve()
      }))
    }
    this.#entries.add(entry)
    entry.timer = setTimeout(() => {
      this.#options.logger.error({ workerPid: entry.pid, startMillis: this.#options.startMillis },
        'worker did not listen within startMillis (does it register fastify-fork-safe-db/worker and call listen()?): killing it')
      worker.process.kill('SIGKILL')
    }, this.#options.startMillis).unref()
    this.#options.logger.info({ workerPid: entry.pid, replaces: replaces?.pid }, 'worker started')
    worker.on('message', (message: unknown) => {
      const word = clusterWord(message)
      if (word === 'listening') this.#onListening(entry)
      if (word === 'recycle' && entry.state === 'serving' && this.#closing === undefined) {
        this.#options.logger.info({ workerPid: entry.pid }, 'worker asked to be recycled')
        this.#enqueue(entry)
      }
    })
    // A send to a worker whose channel is closing is reported here, not thrown.
    worker.on('error', (error: Error) => this.#options.logger.warn({ workerPid: entry.pid, err: error }, 'worker channel error'))
  }

  #onListening (entry: Entry): void {
    if (entry.state === 'retiring') {
      // Told to retire while it started: the message may have arrived before the worker helper
      // listened for it. Now it does.
      this.#send(entry, 'retire')
      return
    }
    if (entry.state !== 'starting') return
    clearTimeout(entry.timer)
    entry.state = 'serving'
    entry.servingSince = performance.now()
    this.#options.logger.info({ workerPid: entry.pid, startMillis: Math.round(entry.servingSince - entry.forkedAt) }, 'worker listening')
    // Only now, with the replacement warm and accepting, may its predecessor stop accepting.
    const replaced = entry.replaces
    entry.replaces = undefined
    if (replaced !== undefined && this.#entries.has(replaced)) this.#retire(replaced)
    if (this.#unforked > 0) {
      const count = this.#unforked
      this.#unforked = 0
      for (let i = 0; i < count; i++) this.#fork(undefined)
    }
    if (this.#onReady !== undefined && this.servingPids().length >= this.#options.workers) {
      this.#onReady(true)
      this.#onReady = undefined
      this.#options.logger.info({ workers: this.#options.workers }, 'all workers listening')
    }
  }

  #enqueue (entry: Entry): void {
    if (this.#queue.includes(entry) || this.#replacing === entry) return
    this.#queue.push(entry)
    this.#next()
  }

  /** Starts the next replacement, unless one is under way. */
  #next (): void {
    if (this.#closing !== undefined || this.#replacing !== undefined) return
    for (let old = this.#queue.shift(); old !== undefined; old = this.#queue.shift()) {
      // Gone or retiring already (it crashed, or a close came): nothing to replace.
      if (old.state !== 'serving' || !this.#entries.has(old)) continue
      this.#replacing = old
      this.#fork(old)
      return
    }
  }

  #send (entry: Entry, word: 'retire'): void {
    // A worker stopped by a signal of its own (Ctrl-C reaches the whole process group) may have
    // closed its channel already.
    if (!entry.worker.isConnected()) return
    entry.worker.send(clusterMessage(word), undefined, (error: Error | null) => {
      if (error !== null) this.#options.logger.info({ workerPid: entry.pid }, 'worker was already leaving')
    })
  }

  #retire (entry: Entry): void {
    if (entry.state === 'retiring' || entry.worker.isDead()) return
    entry.state = 'retiring'
    clearTimeout(entry.timer)
    this.#send(entry, 'retire')
    entry.timer = setTimeout(() => {
      this.#options.logger.error({ workerPid: entry.pid, stopMillis: this.#options.stopMillis }, 'worker did not exit within stopMillis of being told to retire: killing it')
      entry.worker.process.kill('SIGKILL')
    }, this.#options.stopMillis).unref()
  }

  #onExit (entry: Entry, code: number | null, signal: string | null): void {
    clearTimeout(entry.timer)
    this.#entries.delete(entry)
    this.#queue = this.#queue.filter((queued) => queued !== entry)
    if (this.#replacing === entry) {
      this.#replacing = undefined
      // After this exit's own bookkeeping: the next replacement may start.
      setImmediate(() => this.#next())
    }
    const workerPid = entry.pid
    if (entry.state === 'retiring' || this.#closing !== undefined) {
      this.#options.logger.info({ workerPid, code, signal }, 'worker exited')
      return
    }
    // A worker whose replacement is starting needs no respawn: the replacement takes its place.
    const successor = [...this.#entries].find((other) => other.replaces === entry)
    if (successor !== undefined) {
      successor.replaces = undefined
      this.#options.logger.warn({ workerPid, code, signal, successor: successor.pid }, 'worker died while its replacement was starting')
      return
    }
    if (entry.servingSince !== undefined && performance.now() - entry.servingSince >= STABLE_MILLIS) this.#crashes = 0
    this.#crashes += 1
    const delay = this.#crashes === 1 ? 0 : Math.min(MAX_BACKOFF_MILLIS, FIRST_BACKOFF_MILLIS * 2 ** (this.#crashes - 2))
    this.#options.logger.warn({ workerPid, code, signal, crashes: this.#crashes, respawnInMs: delay }, 'worker died; respawning')
    // A replacement that failed to start is started again for the same worker while that one
    // still serves; if it has gone meanwhile, its own exit has seen to a respawn.
    const replaces = entry.replaces
    if (replaces !== undefined && this.#entries.has(replaces)) this.#replacing = replaces
    // Not unref'd: with every worker down it is what keeps the primary alive (close() clears it).
    const timer = setTimeout(() => {
      this.#respawnTimers.delete(timer)
      if (this.#closing !== undefined) return
      if (replaces === undefined) this.#fork(undefined)
      else if (this.#entries.has(replaces) && replaces.state === 'serving') this.#fork(replaces)
      else if (this.#replacing === replaces) {
        this.#replacing = undefined
        this.#next()
      }
    }, delay)
    this.#respawnTimers.add(timer)
  }
}
