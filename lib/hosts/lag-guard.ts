import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import { discard } from '../driver/discard'
import type { DriverConnection } from '../driver/types'
import { scrubError } from '../logging/redact'
import type { HostState } from './host'
import { ReplicaLagReader } from './replica-lag'

// The lag guard of a registration of read replicas (`maxReplicaLagSeconds`). Every
// `replicaLagCheckMillis` it reads each host's lag (hosts/replica-lag.ts) on a connection of its
// own, outside the pool: a monitor must not take a connection a query is waiting for, nor be
// refused one while the pool is saturated. A host further behind than the threshold, or not
// replicating, is taken out of rotation (its connections retire, no new borrow lands on it);
// once it is back under the threshold it is put back. Each change is logged once.
// - One check per host at a time: a slow host never stacks checks; each check is bounded by a
//   deadline, after which its connection is destroyed (a frozen server answers nothing).
// - A failed check (connect refused, lost, no privilege) reopens the connection with a bounded
//   back-off, and leaves the host as it was: whether a host that cannot be reached takes
//   connections is its connect breaker's business, not the guard's.
// - Its timer is unref'd and cleared on stop; close() closes the monitor connections still
//   opening (one to a frozen server would otherwise hold a socket and mysql2's connect timer
//   for connectTimeout), waits for the checks in flight (each bounded) and closes the others.
// - Whether a host is taken out or put back is decided from its state in the host set, not a
//   flag of the guard's: a host taken out as lagging may since have been set down (a failed
//   KILL) or not ready, and put back by a probe while it still lags.

/** A check that has not answered within this long (or the interval, if longer) has failed. */
const MIN_DEADLINE_MILLIS = 1000
/** Reopening a monitor connection backs off from one interval, doubling, to at most this. */
const MAX_BACKOFF_MILLIS = 10_000
/** How long close() lets a monitor connection say goodbye (COM_QUIT) before destroying it. */
const END_MILLIS = 1000

/** The part of the host set (hosts/host-set.ts) the guard uses. */
export interface LagHostSet {
  readonly hosts: ReadonlyArray<{ readonly index: number, readonly label: string, readonly state: HostState }>
  /** Out of rotation: its connections retire (idle ones now, busy ones on release). */
  takeOut: (index: number, state: 'lagging') => void
  /** Back in rotation. */
  putBack: (index: number) => void
  /** The lag last read on host `index` (Infinity: not replicating), for the error's message. */
  noteLag: (index: number, lagSeconds: number) => void
}

/** What the guard needs from its registration (the client runtime provides it). */
export interface LagGuardHost {
  readonly options: { readonly decorator: string, readonly maxReplicaLagSeconds: number, readonly replicaLagCheckMillis: number, readonly secrets: readonly string[] }
  readonly log: FastifyBaseLogger
  readonly hostSet: LagHostSet
  /** A connection to host `index`, outside the pool, in `opening` while it connects. */
  openHostConnection: (index: number, opening: Set<DriverConnection>) => Promise<DriverConnection>
}

interface Watched {
  readonly index: number
  readonly reader: ReplicaLagReader
  connection: DriverConnection | undefined
  checking: Promise<void> | undefined
  failures: number
  retryAt: number
  /** The last lag read (Infinity: not replicating); undefined before the first read. */
  lagSeconds: number | undefined
  /** The last failure's code, logged once until a check succeeds again. */
  failedWith: string | undefined
}

export class LagGuard {
  readonly #host: LagGuardHost
  readonly #watched: Watched[]
  readonly #deadlineMillis: number
  /** Monitor connections still connecting: close() destroys them. */
  readonly #opening = new Set<DriverConnection>()
  #timer: NodeJS.Timeout | undefined
  #stopped = false

  constructor (host: LagGuardHost) {
    this.#host = host
    this.#watched = host.hostSet.hosts.map((entry) => ({
      index: entry.index, reader: new ReplicaLagReader(), connection: undefined, checking: undefined, failures: 0, retryAt: 0, lagSeconds: undefined, failedWith: undefined
    }))
    this.#deadlineMillis = Math.max(MIN_DEADLINE_MILLIS, host.options.replicaLagCheckMillis)
  }

  /** Checks every host now, then every `replicaLagCheckMillis`. */
  start (): void {
    if (this.#stopped || this.#timer !== undefined) return
    this.#timer = setInterval(() => this.#tick(), this.#host.options.replicaLagCheckMillis)
    this.#timer.unref()
    this.#tick()
  }

  /** The last lag read of host `index`: seconds, Infinity when not replicating, undefined before the first read. */
  lagOf (index: number): number | undefined {
    return this.#watched[index]?.lagSeconds
  }

  /** No more checks (a check in flight finishes, bounded); sends nothing. */
  stop (): void {
    this.#stopped = true
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  /** Stops, waits for the checks in flight, and closes the monitor connections. */
  async close (): Promise<void> {
    this.stop()
    const closed = new Error('the lag guard closed')
    for (const connection of this.#opening) discard(connection, closed)
    this.#opening.clear()
    await Promise.all(this.#watched.map((watched) => watched.checking))
    await Promise.all(this.#watched.map(async (watched) => {
      const { connection } = watched
      watched.connection = undefined
      if (connection !== undefined) await end(connection)
    }))
  }

  #tick (): void {
    const now = performance.now()
    for (const watched of this.#watched) {
      if (this.#stopped || watched.checking !== undefined || now < watched.retryAt) continue
      watched.checking = this.#check(watched).finally(() => { watched.checking = undefined })
    }
  }

  async #check (watched: Watched): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const attempt = { expired: false }
    const expired = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => { attempt.expired = true; reject(new DeadlineError(this.#deadlineMillis)) }, this.#deadlineMillis)
    })
    try {
      const lag = await Promise.race([this.#read(watched, attempt), expired])
      if (this.#stopped) return
      watched.failures = 0
      watched.failedWith = undefined
      this.#apply(watched, lag)
    } catch (error) {
      watched.connection?.destroy()
      watched.connection = undefined
      watched.failures += 1
      watched.retryAt = performance.now() + Math.min(MAX_BACKOFF_MILLIS, this.#host.options.replicaLagCheckMillis * 2 ** (watched.failures - 1))
      this.#failed(watched, error)
    } finally {
      clearTimeout(timer)
    }
  }

  async #read (watched: Watched, attempt: { readonly expired: boolean }): Promise<number> {
    if (watched.connection === undefined) {
      const opened = await this.#host.openHostConnection(watched.index, this.#opening)
      // Stopped, or the deadline passed, while it opened: nobody will close it but us.
      if (this.#stopped || attempt.expired) {
        opened.destroy()
        throw new Error('the lag guard stopped')
      }
      watched.connection = opened
    }
    return watched.reader.read(watched.connection)
  }

  #apply (watched: Watched, lag: number): void {
    watched.lagSeconds = lag
    const { options, hostSet, log } = this.#host
    const entry = hostSet.hosts[watched.index]
    hostSet.noteLag(watched.index, lag)
    if (lag > options.maxReplicaLagSeconds) {
      if (entry.state !== 'up') return
      hostSet.takeOut(watched.index, 'lagging')
      log.warn({ host: entry.label, ...describeLag(lag), maxReplicaLagSeconds: options.maxReplicaLagSeconds }, 'replica lags behind its primary: no new borrows on it until it catches up')
      return
    }
    if (entry.state !== 'lagging') return
    hostSet.putBack(watched.index)
    log.info({ host: entry.label, lagSeconds: lag }, 'replica caught up with its primary: back in rotation')
  }

  #failed (watched: Watched, error: unknown): void {
    if (this.#stopped) return
    const code = String((error as { code?: unknown }).code ?? (error as Error).message)
    if (watched.failedWith === code) return
    watched.failedWith = code
    const label = this.#host.hostSet.hosts[watched.index]?.label
    // The app's user may lack the privilege the status needs (REPLICA MONITOR, or REPLICATION CLIENT).
    this.#host.log.warn({ host: label, err: scrubError(error, this.#host.options.secrets) }, 'could not read the replica\'s lag; the host stays as it was, and the check is retried')
  }
}

/** A check that outlived its deadline. */
class DeadlineError extends Error {
  readonly code = 'LAG_CHECK_TIMEOUT'
  constructor (millis: number) {
    super(`the replica lag check did not answer within ${millis} ms`)
  }
}

function describeLag (lag: number): { lagSeconds: number | null, replicating: boolean } {
  return Number.isFinite(lag) ? { lagSeconds: lag, replicating: true } : { lagSeconds: null, replicating: false }
}

/** COM_QUIT, or a destroyed socket if the server does not answer in time. */
function end (connection: DriverConnection): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => { connection.destroy(); resolve() }, END_MILLIS)
    timer.unref()
    connection.end(() => { clearTimeout(timer); resolve() })
  })
}
