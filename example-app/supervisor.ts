import cluster, { type Worker } from 'node:cluster'
import type { Logger } from 'pino'
import type { PrimaryMessage, WorkerMessage } from './messages'
import { cpuMillisOf } from './process-cpu'
import type { StartUpPriority } from './start-up-priority'
import { answerStatsRequest } from './stats-ipc'

// The cluster primary's bookkeeping. It holds no database pool. Its rules:
// - a replacement (recycle or rolling restart) must be listening, hence warm, before the worker
//   it replaces is told to retire, so capacity never dips and no request waits for a connect;
// - a worker that dies unasked is respawned, with exponential backoff across consecutive
//   crashes, so a broken database does not turn into a fork storm;
// - on shutdown every worker drains and exits, and nothing is respawned;
// - a worker that starts while others serve starts at a low CPU priority when the machine has
//   idle CPU for it and the primary may give the priority back (start-up-priority.ts).

const FIRST_BACKOFF_MILLIS = 250
const MAX_BACKOFF_MILLIS = 10_000
/** A worker that served this long before dying resets the crash count. */
const STABLE_MILLIS = 10_000

export interface SupervisorOptions {
  workers: number
  /** Environment for every worker, on top of the primary's. */
  env: Record<string, string>
  log: Logger
  /** The worker script; defaults to the primary's own entry point. */
  exec?: string
  /** Lowers the priority of workers that start while others serve, until they listen. */
  startUpPriority?: StartUpPriority
}

export class Supervisor {
  readonly #options: SupervisorOptions
  readonly #exited = new Map<Worker, Promise<void>>()
  readonly #listeningSince = new Map<Worker, number>()
  readonly #retiring = new Set<Worker>()
  /** old worker -> the promise that resolves once it has been replaced and has exited. */
  readonly #replacements = new Map<Worker, Promise<void>>()
  readonly #respawnTimers = new Set<NodeJS.Timeout>()
  #crashes = 0
  /** Workers start() has still to fork: they follow the first once it listens. */
  #unforked = 0
  #shuttingDown = false
  #onServing: (() => void) | undefined

  constructor (options: SupervisorOptions) {
    this.#options = options
    if (options.exec !== undefined) cluster.setupPrimary({ exec: options.exec })
  }

  /**
   * Forks the workers; resolves once `workers` of them listen (each only after its pool is
   * warm). Counted, not awaited one by one: a worker that dies first is replaced by a respawn.
   * The first worker starts alone and the others once it listens: the app answers as soon as
   * one worker is warm, instead of when several have shared the cores to load and warm up, and
   * a database that refuses connections fails one worker (then its respawns, with backoff), not
   * all of them at once.
   */
  start (): Promise<void> {
    const started = new Promise<void>((resolve) => {
      this.#onServing = () => {
        this.#forkTheRest()
        if (this.serving().length < this.#options.workers) return
        this.#onServing = undefined
        resolve()
      }
    })
    this.#unforked = this.#options.workers - 1
    this.#fork()
    return started
  }

  #forkTheRest (): void {
    const count = this.#unforked
    this.#unforked = 0
    if (!this.#shuttingDown) for (let i = 0; i < count; i++) this.#fork()
  }

  /** Workers currently serving (listening and not retiring). */
  serving (): Worker[] {
    return [...this.#listeningSince.keys()].filter((worker) => !this.#retiring.has(worker))
  }

  /** Replaces every serving worker, one at a time, each replacement warm before its predecessor drains. */
  async rollingRestart (): Promise<void> {
    const workers = this.serving()
    this.#options.log.info({ workers: workers.length }, 'rolling restart started')
    for (const worker of workers) {
      if (this.#shuttingDown) return
      await this.#replace(worker)
    }
    this.#options.log.info('rolling restart finished')
  }

  /** Drains every worker and resolves once all have exited. */
  async shutdown (): Promise<void> {
    this.#shuttingDown = true
    for (const timer of this.#respawnTimers) clearTimeout(timer)
    this.#respawnTimers.clear()
    for (const worker of this.#exited.keys()) this.#retire(worker)
    await Promise.all(this.#exited.values())
    this.#options.startUpPriority?.stop()
  }

  #fork (replaces?: Worker): Worker {
    const worker = cluster.fork(this.#options.env)
    this.#exited.set(worker, new Promise((resolve) => worker.once('exit', () => resolve())))
    const priority = this.serving().length > 0 ? this.#options.startUpPriority : undefined
    const lowered = priority?.lower(worker.process.pid)
    const idleShare = lowered?.idleShare === undefined ? undefined : Math.round(lowered.idleShare * 100) / 100
    this.#options.log.info({ workerPid: worker.process.pid, replaces: replaces?.process.pid, nice: lowered?.nice, idleShare }, 'worker started')

    worker.on('message', (message: WorkerMessage) => {
      if (message?.type === 'stats-all') answerStatsRequest(worker, message.id, [...this.#exited.keys()])
      if (message?.type === 'drained') {
        this.#options.log.info({ workerPid: worker.process.pid, coldAcquires: message.coldAcquires, coldWaitMillis: message.coldWaitMillis }, 'worker drained')
      }
      if (message?.type === 'recycle') {
        this.#options.log.info({ workerPid: worker.process.pid }, 'worker reached MAX_REQUESTS; recycling it')
        this.#replace(worker).catch((error: unknown) => this.#options.log.error({ err: error }, 'recycle failed'))
      }
    })
    worker.once('listening', () => {
      priority?.restore(worker.process.pid)
      this.#listeningSince.set(worker, performance.now())
      this.#options.log.info({ workerPid: worker.process.pid, startUpCpuMillis: cpuMillisOf(worker.process.pid) }, 'worker listening')
      // Only now, with the replacement warm and accepting, may its predecessor stop accepting.
      if (replaces !== undefined) this.#retire(replaces)
      this.#onServing?.()
    })
    worker.once('exit', (code, signal) => {
      priority?.restore(worker.process.pid)
      this.#onExit(worker, code, signal, replaces)
    })
    worker.on('error', (error) => this.#options.log.warn({ workerPid: worker.process.pid, err: error }, 'worker channel error'))
    return worker
  }

  #replace (old: Worker): Promise<void> {
    let replaced = this.#replacements.get(old)
    // Gone already (recycled or crashed before a rolling restart reached it): nothing to replace.
    if (old.isDead() || !this.#exited.has(old)) return Promise.resolve()
    if (this.#retiring.has(old) || this.#shuttingDown) return this.#exited.get(old) ?? Promise.resolve()
    if (replaced === undefined) {
      this.#fork(old)
      replaced = this.#exited.get(old) ?? Promise.resolve()
      this.#replacements.set(old, replaced)
    }
    return replaced
  }

  #retire (worker: Worker): void {
    if (this.#retiring.has(worker) || worker.isDead()) return
    this.#retiring.add(worker)
    // A worker told by a signal of its own (Ctrl-C reaches the whole process group) may have
    // closed its channel already; with a callback a failed send is reported, not thrown.
    if (worker.isConnected()) {
      worker.send({ type: 'retire' } satisfies PrimaryMessage, (error: Error | null) => {
        if (error !== null) this.#options.log.debug({ workerPid: worker.process.pid, err: error }, 'worker was already disconnecting')
      })
    }
  }

  #onExit (worker: Worker, code: number | null, signal: string | null, replaces: Worker | undefined): void {
    const listenedSince = this.#listeningSince.get(worker)
    const wasRetiring = this.#retiring.has(worker)
    const replacementStarting = this.#replacements.has(worker)
    this.#listeningSince.delete(worker)
    this.#retiring.delete(worker)
    this.#exited.delete(worker)
    this.#replacements.delete(worker)
    const workerPid = worker.process.pid

    if (wasRetiring || this.#shuttingDown) {
      this.#options.log.info({ workerPid, code, signal }, 'worker exited')
      return
    }
    // A worker that died before its predecessor retired takes over that replacement; a worker
    // whose own replacement is already starting needs no respawn.
    if (replacementStarting) return
    if (listenedSince !== undefined && performance.now() - listenedSince >= STABLE_MILLIS) this.#crashes = 0
    this.#crashes += 1
    const delay = this.#crashes === 1 ? 0 : Math.min(MAX_BACKOFF_MILLIS, FIRST_BACKOFF_MILLIS * 2 ** (this.#crashes - 2))
    this.#options.log.warn({ workerPid, code, signal, crashes: this.#crashes, respawnInMs: delay }, 'worker died; respawning')
    const timer = setTimeout(() => {
      this.#respawnTimers.delete(timer)
      const stillWaiting = replaces !== undefined && !replaces.isDead() ? replaces : undefined
      if (!this.#shuttingDown) this.#fork(stillWaiting)
    }, delay)
    this.#respawnTimers.add(timer)
  }
}
