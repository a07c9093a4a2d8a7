import { readdirSync, readFileSync } from 'node:fs'
import { getPriority, setPriority } from 'node:os'
import { IdleShare } from './idle-share'

// A replacement starts while the other workers serve. Node's start-up, loading and compiling
// the app, and the request-path warm-up want a whole core for a second or more, and on a small
// machine they take it from the workers that are serving: their requests wait. So a replacement
// starts at a low CPU priority (STARTUP_NICE, 19 by default, the lowest) and gets the primary's
// priority back as it starts listening. Measured with bench:respawn (README, "Respawn"): over 12
// paired runs, 0 requests above 1.8x the median that the benchmark's own lateness does not
// explain, against 2 at the normal priority.
//
// Giving a priority back takes privilege (CAP_SYS_NICE, or an RLIMIT_NICE that allows it). A
// primary without it lowers nothing: a worker left at nice 19 for its whole life would starve
// whenever the machine is busy.
//
// A low priority only helps where there is idle CPU for the start-up to run on. On a machine its
// serving workers saturate, a start-up at nice 19 gets almost none, and the replacement (or the
// respawn after a crash) comes back late for nothing: in CI a rolling restart of 2 workers under
// 8 clients' load on 2 cores outlasted the test's 20 s while start-ups waited out a 10 s bound.
// So a start-up is lowered only when at least MIN_IDLE_SHARE of the machine was idle over the
// last second, and gets the primary's priority back after RESTORE_AFTER_MILLIS in any case (a
// start-up takes 0.65-1.3 s on a local database here, about 2.5 s with one 15 ms away).

// A nice value belongs to a thread on Linux, and a thread takes its creator's: the worker's V8
// and libuv threads, some made before the primary lowers it, others while it is low, are each set
// (a thread left at 19 would serve the worker's file system, DNS and GC work for its whole life).

const CAP_SYS_NICE = 23n
const RESTORE_AFTER_MILLIS = 3_000
const MIN_IDLE_SHARE = 0.25

/** Whether this process may raise a process's priority back to its own (Linux only). */
export function canRestorePriority (): boolean {
  if (process.platform !== 'linux') return false
  try {
    const capabilities = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))
    if (capabilities !== null && ((BigInt(`0x${capabilities[1]}`) >> CAP_SYS_NICE) & 1n) === 1n) return true
    // RLIMIT_NICE's soft limit r lets an unprivileged process go down to nice 20 - r.
    const limit = /^Max nice priority\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    return limit !== null && 20 - Number(limit[1]) <= getPriority()
  } catch {
    return false
  }
}

/** The worker's threads (its pid alone where /proc cannot say). */
export function threadsOf (pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).map(Number)
  } catch {
    return [pid]
  }
}

/** Sets every thread of `pid`; false when the process is gone. */
function setAll (pid: number, nice: number): boolean {
  let set = false
  for (const thread of threadsOf(pid)) {
    try {
      setPriority(thread, nice)
      set = true
    } catch {
      // A thread that has just ended.
    }
  }
  return set
}

export interface StartUpPriorityOptions {
  /** Whether a lowered priority can be given back (CAP_SYS_NICE or RLIMIT_NICE); read from /proc by default. */
  restorable?: boolean
  /** The machine's recent idle share (0-1), undefined when unknown; sampled from /proc/stat by default. */
  idleShare?: () => number | undefined
}

/** What `lower` did: the nice value the worker starts at (undefined: left alone) and the idle share it saw. */
export interface Lowered { nice: number | undefined, idleShare: number | undefined }

export class StartUpPriority {
  readonly #nice: number
  readonly #restoreTo = getPriority()
  readonly #deadlines = new Map<number, NodeJS.Timeout>()
  readonly #idle: IdleShare | undefined
  readonly #idleShare: () => number | undefined

  /** `nice`: the start-up priority (0-19, higher is lower); none when it could not be given back. */
  constructor (nice: number, { restorable = canRestorePriority(), idleShare }: StartUpPriorityOptions = {}) {
    this.#nice = restorable && nice > this.#restoreTo ? nice : this.#restoreTo
    this.#idle = idleShare === undefined && this.#nice !== this.#restoreTo ? new IdleShare() : undefined
    this.#idleShare = idleShare ?? (() => this.#idle?.recent())
  }

  /** Lowers a just-forked worker's priority until it listens (or the deadline passes), if the machine has idle CPU for it. */
  lower (pid: number | undefined): Lowered {
    if (pid === undefined || this.#nice === this.#restoreTo) return { nice: undefined, idleShare: undefined }
    const idleShare = this.#idleShare()
    // Unknown: lower it all the same; the deadline bounds what that can cost.
    if (idleShare !== undefined && idleShare < MIN_IDLE_SHARE) return { nice: undefined, idleShare }
    if (!setAll(pid, this.#nice)) return { nice: undefined, idleShare } // Gone already.
    const deadline = setTimeout(() => this.restore(pid), RESTORE_AFTER_MILLIS)
    deadline.unref()
    this.#deadlines.set(pid, deadline)
    return { nice: this.#nice, idleShare }
  }

  /** Gives the worker the primary's priority back (it listens, or it took too long). */
  restore (pid: number | undefined): void {
    if (pid === undefined || !this.#deadlines.has(pid)) return
    clearTimeout(this.#deadlines.get(pid))
    this.#deadlines.delete(pid)
    setAll(pid, this.#restoreTo)
  }

  /** Stops sampling the idle share and gives every lowered worker its priority back. */
  stop (): void {
    this.#idle?.stop()
    for (const pid of [...this.#deadlines.keys()]) this.restore(pid)
  }
}
