import type { Outcome } from '../../support/http-load'
import type { AppEvent } from './cluster/messages'
import { behindWithin, longestStallWithin, type Behind, type Stall } from './harness-stalls'
import { median } from './report'

// The respawn benchmark's analysis of one run: the requests the harness sent (their outcomes)
// against what the cluster app reported (bench/rig/cluster/messages.ts). Per new worker, how long
// it took from fork to listening and how its first request compared with the run's steady
// state; a worker's first request is the earliest sent of those it answered. Per slow request,
// how much of it the harness itself was behind for.

export interface NewWorker {
  pid: number
  forkToListeningMillis: number
  firstLatency: number
  /** CPU the worker used from its start to listening, every thread (its own reading). */
  startUpCpuMillis: number
}

interface StartUp { forkedAt: number, listenedAt: number, cpuMillis: number }

/** When `outcome` was sent, as an epoch: outcomes are timed on this process's clock, events carry epochs. */
function sentAtEpoch (outcome: Outcome): number {
  return performance.timeOrigin + outcome.sentAt
}

/** Every replacement that came to listen: when it was forked and when it listened (epoch ms). */
function startUps (events: readonly AppEvent[]): Map<number, StartUp> {
  const forked = new Map<number, number>()
  const startUps = new Map<number, StartUp>()
  for (const event of events) {
    if (event.type === 'forked' && event.replaces !== null) forked.set(event.pid, event.at)
    const forkedAt = event.type === 'listening' ? forked.get(event.pid) : undefined
    if (event.type === 'listening' && forkedAt !== undefined) {
      startUps.set(event.pid, { forkedAt, listenedAt: event.at, cpuMillis: event.cpuMillis })
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

export function newWorkers (events: readonly AppEvent[], outcomes: readonly Outcome[]): NewWorker[] {
  const answered = answeredBy(outcomes)
  const workers: NewWorker[] = []
  for (const [pid, { forkedAt, listenedAt, cpuMillis }] of startUps(events)) {
    const first = answered.get(pid)?.[0]
    if (first === undefined) continue
    const forkToListeningMillis = listenedAt - forkedAt
    workers.push({ pid, forkToListeningMillis, firstLatency: first.latency, startUpCpuMillis: cpuMillis })
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
 * starting (between its 'forked' and 'listening' events): the time a
 * new process loads its modules and warms up, competing for the machine's cores with the
 * workers that serve, the clients, the proxy and the database.
 */
export function slowDuringStartUp (
  events: readonly AppEvent[],
  outcomes: readonly Outcome[],
  thresholdMillis: number
): number {
  const windows = [...startUps(events).values()]
  const starting = (at: number) => windows.some(({ forkedAt, listenedAt }) => at >= forkedAt && at <= listenedAt)
  return outcomes.filter((outcome) => outcome.latency > thresholdMillis && starting(sentAtEpoch(outcome))).length
}

/** How many of the requests slower than `thresholdMillis` were among the first `first` their worker answered. */
export function slowAmongFirsts (outcomes: readonly Outcome[], thresholdMillis: number, first: number): number {
  let count = 0
  for (const answered of answeredBy(outcomes).values()) {
    count += answered.slice(0, first).filter((outcome) => outcome.latency > thresholdMillis).length
  }
  return count
}

export interface InsideAndOutside {
  split: Array<{ inside: number, outside: number }>
  /** The median time a worker took over a request, over every request any worker reported. */
  workerMedian: number
}

/**
 * For each request slower than `thresholdMillis`: how long its worker took over it (from the
 * worker's own record of each response it sent) and the rest (the way there and back: the
 * client's and the kernel's side, a primary's handoff). Its record is the worker's entry whose
 * own interval lies within the request's, the longest if several do (requests run concurrently).
 */
export function slowInsideAndOutside (
  events: readonly AppEvent[],
  outcomes: readonly Outcome[],
  thresholdMillis: number
): InsideAndOutside {
  const served = new Map<number, Array<[number, number]>>()
  for (const event of events) if (event.type === 'closing') served.set(event.pid, event.served)
  const split: Array<{ inside: number, outside: number }> = []
  for (const outcome of outcomes) {
    if (outcome.latency <= thresholdMillis || outcome.workerPid === undefined) continue
    const sent = sentAtEpoch(outcome)
    const ended = sent + outcome.latency
    // Epoch milliseconds from two processes: a millisecond of slack each side.
    const own = (served.get(outcome.workerPid) ?? [])
      .filter(([end, millis]) => end - millis >= sent - 1 && end <= ended + 1)
    if (own.length === 0) continue
    const inside = Math.max(...own.map(([, millis]) => millis))
    split.push({ inside, outside: outcome.latency - inside })
  }
  return { split, workerMedian: median([...served.values()].flat().map(([, millis]) => millis)) }
}

/**
 * For each request slower than `thresholdMillis`: for how many of its milliseconds the
 * benchmark's own proxy was behind with a delayed write. The proxy runs in this process, beside
 * the clients: when a starting worker takes the cores, this process can fall behind too, and its
 * lateness shows up as time "in the worker", which waits on the proxy.
 */
export function harnessLateness (
  outcomes: readonly Outcome[],
  lateWrites: readonly Behind[],
  thresholdMillis: number
): number[] {
  return outcomes.filter((outcome) => outcome.latency > thresholdMillis)
    .map((outcome) => behindWithin(lateWrites, outcome.sentAt, outcome.sentAt + outcome.latency))
}

/**
 * How many requests are slower than `thresholdMillis` even with the time the harness was behind
 * taken off (its proxy's late writes and its stalls, overlapping ones counted once, within the
 * request's own interval): the slow requests the app answers for.
 */
export function slowBeyondHarness (
  outcomes: readonly Outcome[],
  lateWrites: readonly Behind[],
  stalls: readonly Stall[],
  thresholdMillis: number
): number {
  const behind = [...lateWrites, ...stalls]
  const own = (outcome: Outcome) =>
    outcome.latency - behindWithin(behind, outcome.sentAt, outcome.sentAt + outcome.latency)
  return outcomes.filter((outcome) => outcome.latency > thresholdMillis && own(outcome) > thresholdMillis).length
}

/**
 * The harness's longest stall while each request slower than `thresholdMillis` was open, as
 * "ms late (on CPU, of which GC / waiting for a CPU / stolen)", each distinct stall once.
 */
export function harnessStallsDuring (
  outcomes: readonly Outcome[],
  stalls: readonly Stall[],
  thresholdMillis: number,
  gcWithin: (stall: Stall) => number
): string {
  const seen = new Set<Stall>()
  for (const outcome of outcomes) {
    if (outcome.latency <= thresholdMillis) continue
    const stall = longestStallWithin(stalls, outcome.sentAt, outcome.sentAt + outcome.latency)
    if (stall !== undefined) seen.add(stall)
  }
  if (seen.size === 0) return 'none'
  const one = (stall: Stall) => `${stall.lateMillis.toFixed(1)} (${stall.onCpuMillis.toFixed(1)}, ` +
    `GC ${gcWithin(stall).toFixed(1)} / ${stall.waitingMillis.toFixed(1)} / ${stall.stolenMillis})`
  return [...seen].map(one).join(', ')
}
