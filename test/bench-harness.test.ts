import type { AppEvent } from '../bench/rig/cluster/messages'
import { behindWithin, longestStallWithin, type Stall } from '../bench/rig/harness-stalls'
import { newWorkers, slowBeyondHarness, slowDuringStartUp, slowInsideAndOutside } from '../bench/rig/respawn-analysis'
import type { Outcome } from '../support/http-load'

// bench:respawn takes the time its own harness was behind off a slow request before blaming the
// app: only the part that overlaps the request, and overlapping stalls once. And it reads what
// its cluster app reported (data over IPC, no log lines) against what its clients saw.

const stall = (at: number, lateMillis: number): Stall => ({ at, lateMillis, onCpuMillis: 0, waitingMillis: 0, stolenMillis: 0 })
const outcome = (sentAt: number, latency: number, workerPid?: number): Outcome =>
  ({ status: 200, sentAt, latency, ...(workerPid === undefined ? {} : { workerPid }) })
/** An epoch on the app's side for a time on the harness's clock. */
const epoch = (at: number) => performance.timeOrigin + at

test('counts only the part of a stall that overlaps the request', () => {
  // A 40 ms stall that ended 5 ms into the request delayed it by 5 ms, not 40.
  expect(behindWithin([stall(105, 40)], 100, 160)).toBe(5)
  // One that ended after the response: only up to the response.
  expect(behindWithin([stall(200, 80)], 100, 160)).toBe(40)
  expect(behindWithin([stall(90, 20)], 100, 160)).toBe(0)
})

test('counts overlapping stalls and late writes once', () => {
  expect(behindWithin([stall(130, 20), { at: 140, lateMillis: 20 }, stall(155, 5)], 100, 160)).toBe(35)
})

test('blames the app for a slow request unless the harness was behind for enough of it', () => {
  const threshold = 60
  const slowAfterAStall = outcome(100, 70) // sent just after a 40 ms stall ended at 101
  const slowDuringAStall = outcome(300, 70) // 30 ms of a stall inside it
  const fast = outcome(500, 30)
  const stalls = [stall(101, 40), stall(340, 30)]
  expect(slowBeyondHarness([slowAfterAStall, slowDuringAStall, fast], [], stalls, threshold)).toBe(1)
  expect(longestStallWithin(stalls, 300, 370)).toBe(stalls[1])
})

test('times a replacement from its fork to its listening and compares its first request', () => {
  const events: AppEvent[] = [
    { type: 'forked', pid: 10, replaces: null, at: epoch(0) },
    { type: 'forked', pid: 11, replaces: 10, at: epoch(1000) },
    { type: 'listening', pid: 11, at: epoch(3500), cpuMillis: 600 }
  ]
  const outcomes = [outcome(3600, 40, 11), outcome(3550, 90, 11), outcome(3700, 35, 10)]
  expect(newWorkers(events, outcomes)).toEqual([{ pid: 11, forkToListeningMillis: 2500, firstLatency: 90, startUpCpuMillis: 600 }])
  // Of the requests above 50 ms, the one sent while pid 11 started (1000-3500) is not among them.
  expect(slowDuringStartUp(events, [outcome(2000, 80), outcome(4000, 80), outcome(2500, 10)], 50)).toBe(1)
})

test('splits a slow request into its time in the worker and on the way, from the worker\'s own record', () => {
  const events: AppEvent[] = [
    // Ended at 180 after 60 ms in the worker (120-180); one that lies outside the request is not its own.
    { type: 'closing', pid: 7, coldAcquires: 0, served: [[epoch(180), 60], [epoch(400), 10]] }
  ]
  const { split } = slowInsideAndOutside(events, [outcome(100, 90, 7), outcome(300, 20, 7)], 50)
  expect(split).toEqual([{ inside: 60, outside: 30 }])
})
