import { behindWithin, longestStallWithin, type Stall } from '../bench/harness-stalls'
import { slowBeyondHarness } from '../bench/respawn-workers'
import type { Outcome } from '../support/http-load'

// bench:respawn takes the time its own harness was behind off a slow request before blaming the
// app: only the part that overlaps the request, and overlapping stalls once.

const stall = (at: number, lateMillis: number): Stall => ({ at, lateMillis, onCpuMillis: 0, waitingMillis: 0, stolenMillis: 0 })
const outcome = (sentAt: number, latency: number): Outcome => ({ status: 200, sentAt, latency })

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
