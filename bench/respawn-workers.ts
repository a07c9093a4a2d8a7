import type { LogLine } from '../support/example-process'
import type { Outcome } from '../support/http-load'
import { behindWithin, longestStallWithin, type Behind, type Stall } from './harness-stalls'
import { median } from './report'

// Per new worker of a respawn run: how long it took from fork to listening (the primary's
// 'worker started' and 'worker listening' lines), and how its first request compared with the
// run's steady state. A worker's first request is the earliest sent of those it answered.

export interface NewWorker {
  pid: number
  forkToListeningMillis: number
  firstLatency: number
  /** CPU the worker used from fork to listening, all threads (the primary's reading; NaN if none). */
  startUpCpuMillis: number
  /** Whether it started at a lowered CPU priority (the primary's 'worker started' line). */
  lowered: boolean
}

interface StartUp { forkedAt: number, listenedAt: number, cpuMillis: number, lowered: boolean }

/** When `outcome` was sent, as an epoch: outcomes are timed on this process's performance clock, log lines carry wall-clock epochs. */
function sentAtEpoch (outcome: Outcome): number {
  return performance.timeOrigin + outcome.sentAt
}

/** Every replacement that came to listen: when it was forked and when it listened (epoch ms, from the log). */
function startUps (lines: readonly LogLine[]): Map<number, StartUp> {
  const forked = new Map<number, { at: number, lowered: boolean }>()
  const startUps = new Map<number, StartUp>()
  for (const line of lines) {
    const pid = Number(line.workerPid)
    if (line.msg === 'worker started' && line.replaces !== undefined) forked.set(pid, { at: Number(line.time), lowered: typeof line.nice === 'number' })
    const fork = forked.get(pid)
    if (line.msg === 'worker listening' && fork !== undefined) {
      const cpuMillis = typeof line.startUpCpuMillis === 'number' ? line.startUpCpuMillis : Number.NaN
      startUps.set(pid, { forkedAt: fork.at, listenedAt: Number(line.time), cpuMillis, lowered: fork.lowered })
    }
  }
  return startUps
}

/** Each worker's answered requests, the earliest sent first. */
function answeredBy (outcomes: readonly Outcome[]): Map<number, Outcome[]> {
  const byPid = new Map<number, Outcome[]>()
  for (const outcome of outcomes) {
    if (outcome.workerPid === undefined) continue
    const answered = byPid.get(outcome.workerPid)
    if (answered === undefined) byPid.set(outcome.workerPid, [outcome])
    else answered.push(outcome)
  }
  for (const answered of byPid.values()) answered.sort((a, b) => a.sentAt - b.sentAt)
  return byPid
}

export function newWorkers (lines: readonly LogLine[], outcomes: readonly Outcome[]): NewWorker[] {
  const answered = answeredBy(outcomes)
  const workers: NewWorker[] = []
  for (const [pid, { forkedAt, listenedAt, cpuMillis, lowered }] of startUps(lines)) {
    const first = answered.get(pid)?.[0]
    if (first === undefined) continue
    workers.push({ pid, forkToListeningMillis: listenedAt - forkedAt, firstLatency: first.latency, startUpCpuMillis: cpuMillis, lowered })
  }
  return workers
}

/** Steady p50: the median of every request that was not a worker's first. */
export function steadyMedian (outcomes: readonly Outcome[]): number {
  const firsts = new Set([...answeredBy(outcomes).values()].map((answered) => answered[0]))
  return median(outcomes.filter((outcome) => !firsts.has(outcome)).map((outcome) => outcome.latency))
}

/**
 * How many of the requests slower than `thresholdMillis` were sent while some replacement was
 * starting (between the primary's 'worker started' and 'worker listening' for it): the time a
 * new process loads its modules and warms up, competing for the machine's cores with the
 * workers that serve, the clients, the proxy and the database.
 */
export function slowDuringStartUp (lines: readonly LogLine[], outcomes: readonly Outcome[], thresholdMillis: number): number {
  const windows = [...startUps(lines).values()]
  return outcomes.filter((outcome) => outcome.latency > thresholdMillis &&
    windows.some(({ forkedAt, listenedAt }) => sentAtEpoch(outcome) >= forkedAt && sentAtEpoch(outcome) <= listenedAt)).length
}

/** How many of the requests slower than `thresholdMillis` were among the first `first` their worker answered. */
export function slowAmongFirsts (outcomes: readonly Outcome[], thresholdMillis: number, first: number): number {
  let count = 0
  for (const answered of answeredBy(outcomes).values()) {
    count += answered.slice(0, first).filter((outcome) => outcome.latency > thresholdMillis).length
  }
  return count
}

/**
 * For each request slower than `thresholdMillis`: how long its worker took over it (the `ms` of
 * the worker's one-line-per-request log entry) and the rest (the way there and back: the
 * client's and the kernel's side, a primary's handoff). Its entry is the worker's line whose own
 * interval lies within the request's, the longest if several do (requests run four at a time).
 */
export function slowInsideAndOutside (lines: readonly LogLine[], outcomes: readonly Outcome[], thresholdMillis: number): { split: Array<{ inside: number, outside: number }>, workerMedian: number } {
  const served = lines.filter((line) => typeof line.ms === 'number' && typeof line.reqId === 'string')
  const split: Array<{ inside: number, outside: number }> = []
  for (const outcome of outcomes) {
    if (outcome.latency <= thresholdMillis) continue
    const sent = sentAtEpoch(outcome)
    const ended = sent + outcome.latency
    // Epoch milliseconds from two processes: a millisecond of slack each side.
    const own = served.filter((line) => line.pid === outcome.workerPid && Number(line.time) - Number(line.ms) >= sent - 1 && Number(line.time) <= ended + 1)
    if (own.length === 0) continue
    const inside = Math.max(...own.map((line) => Number(line.ms)))
    split.push({ inside, outside: outcome.latency - inside })
  }
  return { split, workerMedian: median(served.map((line) => Number(line.ms))) }
}

/**
 * For each request slower than `thresholdMillis`: for how many of its milliseconds the
 * benchmark's own proxy was behind with a delayed write. The proxy runs in this process, beside
 * the clients: when a starting worker takes the cores, this process can fall behind too, and its
 * lateness shows up as time "in the worker", which waits on the proxy.
 */
export function harnessLateness (outcomes: readonly Outcome[], lateWrites: readonly Behind[], thresholdMillis: number): number[] {
  return outcomes.filter((outcome) => outcome.latency > thresholdMillis).map((outcome) => behindWithin(lateWrites, outcome.sentAt, outcome.sentAt + outcome.latency))
}

/**
 * How many requests are slower than `thresholdMillis` even with the time the harness was behind
 * taken off (its proxy's late writes and its stalls, overlapping ones counted once, within the
 * request's own interval): the slow requests the app answers for.
 */
export function slowBeyondHarness (outcomes: readonly Outcome[], lateWrites: readonly Behind[], stalls: readonly Stall[], thresholdMillis: number): number {
  const behind = [...lateWrites, ...stalls]
  return outcomes.filter((outcome) => outcome.latency > thresholdMillis &&
    outcome.latency - behindWithin(behind, outcome.sentAt, outcome.sentAt + outcome.latency) > thresholdMillis).length
}

/**
 * The harness's longest stall while each request slower than `thresholdMillis` was open, as
 * "ms late (on CPU, of which GC / waiting for a CPU / stolen)", each distinct stall once.
 */
export function harnessStallsDuring (outcomes: readonly Outcome[], stalls: readonly Stall[], thresholdMillis: number, gcWithin: (stall: Stall) => number): string {
  const seen = new Set<Stall>()
  for (const outcome of outcomes) {
    if (outcome.latency <= thresholdMillis) continue
    const stall = longestStallWithin(stalls, outcome.sentAt, outcome.sentAt + outcome.latency)
    if (stall !== undefined) seen.add(stall)
  }
  if (seen.size === 0) return 'none'
  const one = (stall: Stall) => `${stall.lateMillis.toFixed(1)} (${stall.onCpuMillis.toFixed(1)}, GC ${gcWithin(stall).toFixed(1)} / ${stall.waitingMillis.toFixed(1)} / ${stall.stolenMillis})`
  return [...seen].map(one).join(', ')
}
