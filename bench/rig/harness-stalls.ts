import { readFileSync } from 'node:fs'
import { PerformanceObserver } from 'node:perf_hooks'

// Stalls of the harness's own event loop, and where the time went. A timer ticks every
// TICK_MILLIS; a tick that comes more than STALL_MILLIS late is a stall. For each stall, from
// Linux's counters read on every tick:
// - on CPU: this thread ran (its own work: a GC, parsing the app's log lines);
// - waiting for a CPU: runnable, but the scheduler ran something else (another process);
// - stolen: the hypervisor ran another guest on the machine's virtual CPUs (all CPUs, in
//   USER_HZ ticks of 10 ms, so coarse);
// - the rest: blocked (page faults, I/O) or below the counters' resolution.
// And of the time on CPU, how much went to the harness's garbage collections (V8's gc entries).
// Linux only (/proc); elsewhere the stalls are still timed and the split reads as zeros.

const TICK_MILLIS = 5
const STALL_MILLIS = 5
const USER_HZ_MILLIS = 10

export interface Stall {
  at: number
  lateMillis: number
  onCpuMillis: number
  waitingMillis: number
  stolenMillis: number
}

interface Counters { onCpuNanos: number, waitingNanos: number, stolenTicks: number }

/** The machine's steal time (the 8th of the "cpu" line's times in /proc/stat), in USER_HZ ticks. */
function stolenTicks (): number {
  const stat = readFileSync('/proc/stat', 'latin1')
  return Number(stat.slice(0, stat.indexOf('\n')).trim().split(/\s+/)[8] ?? 0)
}

function read (): Counters {
  try {
    // The main thread's own line: total time on CPU and time waiting on a run queue, in ns.
    const [onCpu, waiting] = readFileSync('/proc/thread-self/schedstat', 'latin1').split(' ').map(Number)
    // The machine's steal, the 8th of its CPU times.
    return { onCpuNanos: onCpu, waitingNanos: waiting, stolenTicks: stolenTicks() }
  } catch {
    return { onCpuNanos: 0, waitingNanos: 0, stolenTicks: 0 }
  }
}

export interface StallWatch {
  stalls: Stall[]
  stop: () => void
  /** Milliseconds of the harness's GC pauses within a stall. */
  gcWithin: (stall: Stall) => number
}

export function watchHarnessStalls (): StallWatch {
  const stalls: Stall[] = []
  // GC pauses are reported after they end, so a stall is given its share at the end of the run.
  const pauses: Array<{ start: number, end: number }> = []
  const gc = new PerformanceObserver((list) => {
    for (const { startTime, duration } of list.getEntries()) {
      pauses.push({ start: startTime, end: startTime + duration })
    }
  })
  gc.observe({ entryTypes: ['gc'] })
  let last = read()
  let due = performance.now() + TICK_MILLIS
  const timer = setInterval(() => {
    const now = performance.now()
    const counters = read()
    const late = now - due
    if (late > STALL_MILLIS) {
      stalls.push({
        at: now,
        lateMillis: late,
        onCpuMillis: (counters.onCpuNanos - last.onCpuNanos) / 1e6,
        waitingMillis: (counters.waitingNanos - last.waitingNanos) / 1e6,
        stolenMillis: (counters.stolenTicks - last.stolenTicks) * USER_HZ_MILLIS
      })
    }
    last = counters
    due = now + TICK_MILLIS
  }, TICK_MILLIS)
  const stop = () => {
    clearInterval(timer)
    gc.disconnect()
  }
  return { stalls, stop, gcWithin: (stall: Stall) => gcWithin(pauses, stall) }
}

/** Milliseconds of GC pauses within the stall (from the tick before it to its end). */
function gcWithin (pauses: ReadonlyArray<{ start: number, end: number }>, stall: Stall): number {
  const from = stall.at - stall.lateMillis - TICK_MILLIS
  let total = 0
  for (const { start, end } of pauses) total += Math.max(0, Math.min(end, stall.at) - Math.max(start, from))
  return total
}

/** A time the harness was behind: from `at - lateMillis` to `at` (this process's performance.now()). */
export interface Behind { at: number, lateMillis: number }

function overlap ({ at, lateMillis }: Behind, from: number, to: number): number {
  return Math.max(0, Math.min(at, to) - Math.max(at - lateMillis, from))
}

/** Milliseconds of [from, to] during which the harness was behind, overlapping entries counted once. */
export function behindWithin (entries: readonly Behind[], from: number, to: number): number {
  const spans = entries.filter((entry) => overlap(entry, from, to) > 0)
    .map(({ at, lateMillis }) => [Math.max(at - lateMillis, from), Math.min(at, to)])
    .sort((a, b) => a[0] - b[0])
  let total = 0
  let covered = -Infinity
  for (const [start, end] of spans) {
    if (end <= covered) continue
    total += end - Math.max(start, covered)
    covered = end
  }
  return total
}

/** The stall that overlaps [from, to] the most, or undefined. */
export function longestStallWithin (stalls: readonly Stall[], from: number, to: number): Stall | undefined {
  let longest: Stall | undefined
  for (const stall of stalls) {
    const own = overlap(stall, from, to)
    if (own > 0 && (longest === undefined || own > overlap(longest, from, to))) longest = stall
  }
  return longest
}
