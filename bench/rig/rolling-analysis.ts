import type { Scrape } from './metrics-scraper'
import { histogram, histogramDelta, parsePrometheusText, quantile, quantileBound, select, total, type HistogramState, type Sample } from './prometheus-text'

// What the rolling-restart bench reads from each scrape of the example's GET /metrics, and the
// checks that make its picture a test of the metrics: the scraped connection total against the
// server's PROCESSLIST, the acquire-wait histogram per interval, workers coming and going.

/** OpenTelemetry's names as the Prometheus exporter writes them (dots to underscores, unit suffixes). */
export const NAMES = {
  count: 'db_client_connection_count',
  state: 'db_client_connection_state',
  pid: 'process_pid',
  wait: 'db_client_connection_wait_time_seconds',
  pending: 'db_client_connection_pending_requests',
  workers: 'example_metrics_workers'
} as const

export interface PoolView {
  /** Milliseconds, as Scrape.at. */
  at: number
  ok: boolean
  /** Connections by worker pid and state, and requests waiting for one. */
  perPid: Map<string, { idle: number, used: number, pending: number }>
  idle: number
  used: number
  pending: number
  /** Workers the endpoint said it left out (silent or leaving); 0 when it does not say. */
  missing: number
  /** PROCESSLIST just before and just after the scrape, and when those were read. */
  before: number
  after: number
  startedAt: number
  endedAt: number
  /** Lines of the exposition the reader could not read. */
  skipped: string[]
  samples: Sample[]
}

export function poolView (scrape: Scrape): PoolView {
  const ok = scrape.status === 200
  const { samples, skipped } = ok ? parsePrometheusText(scrape.body) : { samples: [], skipped: [] }
  const perPid = new Map<string, { idle: number, used: number, pending: number }>()
  const entryOf = (sample: Sample) => {
    const pid = sample.labels[NAMES.pid] ?? '?'
    const entry = perPid.get(pid) ?? { idle: 0, used: 0, pending: 0 }
    perPid.set(pid, entry)
    return entry
  }
  for (const sample of select(samples, NAMES.count)) {
    const entry = entryOf(sample)
    const state = sample.labels[NAMES.state]
    if (state === 'idle') entry.idle += sample.value
    if (state === 'used') entry.used += sample.value
  }
  for (const sample of select(samples, NAMES.pending)) entryOf(sample).pending += sample.value
  const sum = (key: 'idle' | 'used') => [...perPid.values()].reduce((all, entry) => all + entry[key], 0)
  return {
    at: scrape.at,
    ok,
    perPid,
    idle: sum('idle'),
    used: sum('used'),
    pending: total(samples, NAMES.pending),
    missing: total(samples, NAMES.workers, { outcome: 'missing' }),
    before: scrape.before,
    after: scrape.after,
    startedAt: scrape.startedAt,
    endedAt: scrape.endedAt,
    skipped,
    samples
  }
}

export type Verdict = 'agrees' | 'moving' | 'missing worker' | 'scrape failed' | 'disagrees'

/**
 * Whether a scrape's connection total agrees with PROCESSLIST. The scrape and the server's
 * count cannot be read at one instant, and a connection's opening or closing is seen by the
 * pool and by the server a little apart (the server lists a connection once it has
 * authenticated, before the pool has finished setting it up and counts it; the server lets a
 * closed connection's thread go after the pool has stopped counting it). So:
 * - 'agrees': PROCESSLIST read the same just before and just after the scrape, and the scraped
 *   total equals it;
 * - 'missing worker': the endpoint said a worker was left out of this scrape;
 * - 'moving': a connection opened or closed within one sample of this one (the two counts around
 *   it differ, or a neighbouring sample's counts or total differ from its own): a disagreement
 *   here is the two views a few milliseconds apart;
 * - 'scrape failed': no answer, or not a 200 (the bench fails on any);
 * - 'disagrees': the total differs from a count that held still around it and its neighbours.
 *   A miscount persists (a connection the metrics lost stays lost), so it shows in samples
 *   where nothing moves, and fails the bench there.
 */
export function verdicts (views: readonly PoolView[]): Verdict[] {
  return views.map((view, index) => {
    if (!view.ok) return 'scrape failed'
    const scraped = view.idle + view.used
    if (view.before === view.after && scraped === view.before) return 'agrees'
    if (view.missing > 0) return 'missing worker'
    const around = [views[index - 1], view, views[index + 1]].filter((entry) => entry !== undefined && entry.ok)
    const counts = new Set(around.flatMap((entry) => [entry.before, entry.after]))
    const totals = new Set(around.map((entry) => entry.idle + entry.used))
    return counts.size > 1 || totals.size > 1 ? 'moving' : 'disagrees'
  })
}

export interface WaitPoint {
  /** Milliseconds, the later scrape's. */
  at: number
  /** Borrows the histogram counted between the two scrapes (over the workers in both). */
  count: number
  /** Their mean wait, ms (Δsum / Δcount); NaN with none. */
  meanMillis: number
  /** histogram_quantile(0.99) of the interval's buckets, ms; NaN with none. */
  p99Millis: number
  /** The upper edge of the bucket holding the 99th percentile, ms (what the buckets know for sure). */
  p99BoundMillis: number
}

function add (a: HistogramState, b: HistogramState): HistogramState {
  const buckets = new Map(a.buckets)
  for (const [le, count] of b.buckets) buckets.set(le, (buckets.get(le) ?? 0) + count)
  return { buckets: new Map([...buckets].sort(([x], [y]) => x - y)), sum: a.sum + b.sum, count: a.count + b.count }
}

const pidsOf = (view: PoolView) => new Set(select(view.samples, `${NAMES.wait}_count`).map((sample) => sample.labels[NAMES.pid] ?? '?'))

/**
 * The acquire wait between consecutive scrapes: each worker's histogram minus its own previous
 * one (a worker seen in only one of the two scrapes adds nothing: its counters started or ended
 * between them), added up over workers.
 */
export function waitPoints (views: readonly PoolView[]): WaitPoint[] {
  const points: WaitPoint[] = []
  for (let index = 1; index < views.length; index++) {
    const earlier = views[index - 1]
    const later = views[index]
    if (!earlier.ok || !later.ok) continue
    const laterPids = pidsOf(later)
    let interval: HistogramState = { buckets: new Map(), sum: 0, count: 0 }
    for (const pid of pidsOf(earlier)) {
      if (!laterPids.has(pid)) continue
      const match = { [NAMES.pid]: pid }
      const delta = histogramDelta(histogram(earlier.samples, NAMES.wait, match), histogram(later.samples, NAMES.wait, match))
      // A counter that went down is a restarted process under a reused pid: not an interval.
      if (delta.count < 0) continue
      interval = add(interval, delta)
    }
    const none = interval.count === 0
    points.push({
      at: later.at,
      count: interval.count,
      meanMillis: none ? Number.NaN : (1000 * interval.sum) / interval.count,
      p99Millis: none ? Number.NaN : 1000 * quantile(interval, 0.99),
      p99BoundMillis: none ? Number.NaN : 1000 * quantileBound(interval, 0.99)
    })
  }
  return points
}

export interface PidChange { at: number, pid: string, change: 'appeared' | 'left' }

/** Where a worker pid first shows in the scrapes, and where it is first gone (failed scrapes are skipped). */
export function pidChanges (views: readonly PoolView[]): PidChange[] {
  const changes: PidChange[] = []
  let known: Set<string> | undefined
  for (const view of views) {
    if (!view.ok) continue
    const now = new Set(view.perPid.keys())
    if (known !== undefined) {
      for (const pid of now) if (!known.has(pid)) changes.push({ at: view.at, pid, change: 'appeared' })
      // A worker left out of one scrape (silent, or slow to answer) has not left: wait for a
      // scrape that leaves nobody out.
      if (view.missing > 0) {
        for (const pid of known) now.add(pid)
      } else {
        for (const pid of known) if (!now.has(pid)) changes.push({ at: view.at, pid, change: 'left' })
      }
    }
    known = now
  }
  return changes
}

export interface StuckPending { pid: string, from: number, scrapes: number }

/**
 * Runs of at least `run` consecutive scrapes in which one worker reports requests waiting for a
 * connection while it reports idle ones. The pool hands an idle connection to a waiting request
 * at once, so both at the same moment last an instant, never several scrapes: a run means the
 * pending gauge is stuck (a series that kept its last value, say).
 */
export function stuckPending (views: readonly PoolView[], run = 3): StuckPending[] {
  const found: StuckPending[] = []
  const open = new Map<string, { from: number, scrapes: number }>()
  const close = (pid: string) => {
    const current = open.get(pid)
    if (current !== undefined && current.scrapes >= run) found.push({ pid, ...current })
    open.delete(pid)
  }
  for (const view of views) {
    if (!view.ok) continue
    for (const [pid, entry] of view.perPid) {
      if (entry.pending > 0 && entry.idle > 0) {
        const current = open.get(pid) ?? { from: view.at, scrapes: 0 }
        current.scrapes++
        open.set(pid, current)
      } else {
        close(pid)
      }
    }
    for (const pid of [...open.keys()]) if (!view.perPid.has(pid)) close(pid)
  }
  for (const pid of [...open.keys()]) close(pid)
  return found
}
