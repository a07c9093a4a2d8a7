import type { Scrape } from '../bench/rig/metrics-scraper'
import { pidChanges, poolView, stuckPending, verdicts, waitPoints } from '../bench/rig/rolling-analysis'

// The rolling-restart bench fails on these verdicts, so they are tested on made-up scrapes: what
// counts as agreeing with PROCESSLIST, what is excused, what fails.

interface Worker { pid: number, idle: number, used: number, pending?: number, waits?: number, waitSum?: number, under1ms?: number }

function scrape (at: number, workers: Worker[], processlist: [number, number], missing = 0): Scrape {
  const lines = workers.flatMap(({ pid, idle, used, pending = 0, waits = 0, waitSum = 0, under1ms = waits }) => [
    `db_client_connection_pending_requests{process_pid="${pid}"} ${pending}`,
    `db_client_connection_count{db_client_connection_state="idle",process_pid="${pid}"} ${idle}`,
    `db_client_connection_count{db_client_connection_state="used",process_pid="${pid}"} ${used}`,
    `db_client_connection_wait_time_seconds_bucket{process_pid="${pid}",le="0.001"} ${under1ms}`,
    `db_client_connection_wait_time_seconds_bucket{process_pid="${pid}",le="0.005"} ${waits}`,
    `db_client_connection_wait_time_seconds_bucket{process_pid="${pid}",le="+Inf"} ${waits}`,
    `db_client_connection_wait_time_seconds_sum{process_pid="${pid}"} ${waitSum}`,
    `db_client_connection_wait_time_seconds_count{process_pid="${pid}"} ${waits}`
  ])
  lines.push(`example_metrics_workers{outcome="answered"} ${workers.length}`, `example_metrics_workers{outcome="missing"} ${missing}`)
  return { at, startedAt: at, endedAt: at, scrapeMillis: 1, status: 200, body: lines.join('\n'), before: processlist[0], after: processlist[1] }
}

const steady = (at: number, processlist: [number, number] = [4, 4]) =>
  scrape(at, [{ pid: 1, idle: 2, used: 0 }, { pid: 2, idle: 1, used: 1 }], processlist)

test('a total equal to PROCESSLIST read just before and just after agrees', () => {
  expect(verdicts([steady(0), steady(1), steady(2)].map(poolView))).toEqual(['agrees', 'agrees', 'agrees'])
})

test('a scrape while PROCESSLIST changed under it is moving, whatever its total', () => {
  expect(verdicts([steady(0), steady(1, [4, 5]), steady(2, [9, 3]), steady(3)].map(poolView))).toEqual(['agrees', 'moving', 'moving', 'agrees'])
})

test('a disagreement next to a connection opening or closing is excused as moving', () => {
  const views = [steady(0), steady(1, [5, 5]), scrape(2, [{ pid: 1, idle: 3, used: 0 }, { pid: 2, idle: 1, used: 1 }], [5, 5])].map(poolView)
  expect(verdicts(views)).toEqual(['agrees', 'moving', 'agrees'])
})

test('a disagreement while nothing moves fails, and so does a failed scrape', () => {
  const views = [steady(0, [5, 5]), steady(1, [5, 5]), steady(2, [5, 5])].map(poolView)
  expect(verdicts(views)).toEqual(['disagrees', 'disagrees', 'disagrees'])
  const failed: Scrape = { at: 3, startedAt: 3, endedAt: 3, scrapeMillis: 1, status: 0, error: 'TIMEOUT', body: '', before: 4, after: 4 }
  expect(verdicts([steady(0), failed, steady(2)].map(poolView))).toEqual(['agrees', 'scrape failed', 'agrees'])
})

test('a scrape that left a worker out is not held to PROCESSLIST, and its worker has not left', () => {
  const views = [steady(0), scrape(1, [{ pid: 1, idle: 2, used: 0 }], [4, 4], 1), steady(2)].map(poolView)
  expect(verdicts(views)).toEqual(['agrees', 'missing worker', 'agrees'])
  expect(pidChanges(views)).toEqual([])
})

test('marks where a worker pid first shows and where it is first gone', () => {
  const views = [
    steady(0),
    scrape(1, [{ pid: 1, idle: 2, used: 0 }, { pid: 2, idle: 1, used: 1 }, { pid: 3, idle: 2, used: 0 }], [6, 6]),
    scrape(2, [{ pid: 2, idle: 1, used: 1 }, { pid: 3, idle: 2, used: 0 }], [4, 4])
  ].map(poolView)
  expect(pidChanges(views)).toEqual([{ at: 1, pid: '3', change: 'appeared' }, { at: 2, pid: '1', change: 'left' }])
})

test('the wait per interval adds up the workers seen in both scrapes, each against its own previous count', () => {
  const views = [
    scrape(0, [{ pid: 1, idle: 2, used: 0, waits: 10, waitSum: 0.001 }, { pid: 2, idle: 2, used: 0, waits: 5, waitSum: 0.001 }], [4, 4]),
    // pid 2 is gone and pid 3 is new: neither adds to this interval.
    scrape(1, [{ pid: 1, idle: 2, used: 0, waits: 110, waitSum: 0.051, under1ms: 109 }, { pid: 3, idle: 2, used: 0, waits: 50, waitSum: 1 }], [4, 4]),
    scrape(2, [{ pid: 1, idle: 2, used: 0, waits: 110, waitSum: 0.051, under1ms: 109 }, { pid: 3, idle: 2, used: 0, waits: 50, waitSum: 1 }], [4, 4])
  ].map(poolView)
  const [first, second] = waitPoints(views)
  expect(first.count).toBe(100)
  expect(first.meanMillis).toBeCloseTo(0.5, 9)
  // Rank 99 of 100 is the last in (0, 1 ms]: bounded by 1 ms.
  expect(first.p99BoundMillis).toBe(1)
  expect(second.count).toBe(0)
  expect(second.meanMillis).toBeNaN()
})

test('a worker that reports waiting requests beside idle connections for three scrapes in a row has a stuck gauge', () => {
  const waiting = (at: number, idle: number) => scrape(at, [{ pid: 1, idle, used: 1, pending: 1 }, { pid: 2, idle: 2, used: 0 }], [idle + 3, idle + 3])
  // Two in a row is an instant caught twice; three is stuck.
  expect(stuckPending([waiting(0, 1), waiting(1, 1), waiting(2, 0), waiting(3, 1)].map(poolView))).toEqual([])
  expect(stuckPending([waiting(0, 0), waiting(1, 1), waiting(2, 1), waiting(3, 1)].map(poolView))).toEqual([{ pid: '1', from: 1, scrapes: 3 }])
})
