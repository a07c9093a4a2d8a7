import { readdirSync, readFileSync } from 'node:fs'
import { getPriority, setPriority } from 'node:os'

// A replacement starts while the other workers serve. Node's start-up, loading and compiling
// the app, and the request-path warm-up want a whole core for a second or more, and on a small
// machine they take it from the workers that are serving: their requests wait. With STARTUP_NICE
// a replacement starts at a low CPU priority (19 the lowest) and gets the primary's priority back
// as it starts listening. Measured with bench:respawn (README, "Respawn"): a lower p99 in 9 of 9
// paired runs, and 5 requests above 1.8x the median against 20.
//
// Giving a priority back takes privilege (CAP_SYS_NICE, or an RLIMIT_NICE that allows it). A
// primary without it lowers nothing: a worker left at nice 19 for its whole life would starve
// whenever the machine is busy. And a machine saturated by its serving workers would starve a
// low-priority start-up for minutes: after RESTORE_AFTER_MILLIS the priority comes back anyway.
// That is also why it is off by default: under saturation a start-up can wait out the bound (in
// CI a rolling restart of 2 workers under 8 clients' load on 2 cores outlasted the test's 20 s).

// A nice value belongs to a thread on Linux, and a thread takes its creator's: the worker's V8
// and libuv threads, some made before the primary lowers it, others while it is low, are each set
// (a thread left at 19 would serve the worker's file system, DNS and GC work for its whole life).

const CAP_SYS_NICE = 23n
const RESTORE_AFTER_MILLIS = 10_000

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

export class StartUpPriority {
  readonly #nice: number
  readonly #restoreTo = getPriority()
  readonly #deadlines = new Map<number, NodeJS.Timeout>()

  /** `nice`: the start-up priority (0-19, higher is lower); none when it could not be given back. */
  constructor (nice: number, restorable = canRestorePriority()) {
    this.#nice = restorable && nice > this.#restoreTo ? nice : this.#restoreTo
  }

  /** The nice value a new worker starts at (the primary's own when nothing is lowered). */
  get startUpNice (): number {
    return this.#nice
  }

  /** Lowers a just-forked worker's priority until it listens (or the deadline passes). */
  lower (pid: number | undefined): void {
    if (pid === undefined || this.#nice === this.#restoreTo) return
    if (!setAll(pid, this.#nice)) return // Gone already.
    const deadline = setTimeout(() => this.restore(pid), RESTORE_AFTER_MILLIS)
    deadline.unref()
    this.#deadlines.set(pid, deadline)
  }

  /** Gives the worker the primary's priority back (it listens, or it took too long). */
  restore (pid: number | undefined): void {
    if (pid === undefined || !this.#deadlines.has(pid)) return
    clearTimeout(this.#deadlines.get(pid))
    this.#deadlines.delete(pid)
    setAll(pid, this.#restoreTo)
  }
}
