import type { LogLine } from '../support/example-process'
import type { Outcome } from '../support/http-load'
import { median } from './report'

// Per new worker of a respawn run: how long it took from fork to listening (the primary's
// 'worker started' and 'worker listening' lines), and how its first request compared with the
// run's steady state. A worker's first request is the earliest sent of those it answered.

export interface NewWorker {
  pid: number
  forkToListeningMillis: number
  firstLatency: number
}

export function newWorkers (lines: readonly LogLine[], outcomes: readonly Outcome[]): NewWorker[] {
  const started = new Map<number, number>()
  const listening = new Map<number, number>()
  for (const line of lines) {
    const pid = Number(line.workerPid)
    if (line.msg === 'worker started' && line.replaces !== undefined) started.set(pid, Number(line.time))
    if (line.msg === 'worker listening') listening.set(pid, Number(line.time))
  }
  const first = new Map<number, Outcome>()
  for (const outcome of outcomes) {
    if (outcome.workerPid === undefined) continue
    const seen = first.get(outcome.workerPid)
    if (seen === undefined || outcome.sentAt < seen.sentAt) first.set(outcome.workerPid, outcome)
  }
  const workers: NewWorker[] = []
  for (const [pid, forkedAt] of started) {
    const listenedAt = listening.get(pid)
    const firstOutcome = first.get(pid)
    if (listenedAt === undefined || firstOutcome === undefined) continue
    workers.push({ pid, forkToListeningMillis: listenedAt - forkedAt, firstLatency: firstOutcome.latency })
  }
  return workers
}

/** Steady p50: the median of every request that was not a worker's first. */
export function steadyMedian (outcomes: readonly Outcome[]): number {
  const firsts = new Set<Outcome>()
  const byPid = new Map<number, Outcome>()
  for (const outcome of outcomes) {
    if (outcome.workerPid === undefined) continue
    const seen = byPid.get(outcome.workerPid)
    if (seen === undefined || outcome.sentAt < seen.sentAt) byPid.set(outcome.workerPid, outcome)
  }
  for (const outcome of byPid.values()) firsts.add(outcome)
  return median(outcomes.filter((outcome) => !firsts.has(outcome)).map((outcome) => outcome.latency))
}

/**
 * How many of the requests slower than `thresholdMillis` were sent while some replacement was
 * starting (between the primary's 'worker started' and 'worker listening' for it): the time a
 * new process loads its modules and warms up, competing for the machine's cores with the
 * workers that serve, the clients, the proxy and the database.
 */
export function slowDuringStartUp (lines: readonly LogLine[], outcomes: readonly Outcome[], thresholdMillis: number): number {
  const windows: Array<[number, number]> = []
  const started = new Map<number, number>()
  for (const line of lines) {
    const pid = Number(line.workerPid)
    if (line.msg === 'worker started' && line.replaces !== undefined) started.set(pid, Number(line.time))
    const from = started.get(pid)
    if (line.msg === 'worker listening' && from !== undefined) windows.push([from, Number(line.time)])
  }
  // Outcomes are timed on this process's performance clock; log lines carry wall-clock epochs.
  const sentAt = (outcome: Outcome) => performance.timeOrigin + outcome.sentAt
  return outcomes.filter((outcome) => outcome.latency > thresholdMillis &&
    windows.some(([from, to]) => sentAt(outcome) >= from && sentAt(outcome) <= to)).length
}

/** How many of the requests slower than `thresholdMillis` were among the first `first` their worker answered. */
export function slowAmongFirsts (outcomes: readonly Outcome[], thresholdMillis: number, first: number): number {
  const byPid = new Map<number, Outcome[]>()
  for (const outcome of outcomes) {
    if (outcome.workerPid === undefined) continue
    byPid.set(outcome.workerPid, [...(byPid.get(outcome.workerPid) ?? []), outcome])
  }
  let count = 0
  for (const answered of byPid.values()) {
    const earliest = [...answered].sort((a, b) => a.sentAt - b.sentAt).slice(0, first)
    count += earliest.filter((outcome) => outcome.latency > thresholdMillis).length
  }
  return count
}
