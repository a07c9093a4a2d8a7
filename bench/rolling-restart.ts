import { copyFile, mkdir } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { createConnection } from 'mysql2/promise'
import { ExampleProcess } from '../support/example-process'
import { failures, type Outcome } from '../support/http-load'
import { freePort } from '../support/private-server'
import { TcpProxy } from '../support/tcp-proxy'
import { benchDatabase, userPath } from './rig/database'
import { startScraping } from './rig/metrics-scraper'
import { startPacedLoad } from './rig/paced-load'
import { fail, fixed, median, percentile, spread, table, writeResult } from './rig/report'
import { pidChanges, poolView, stuckPending, verdicts, waitPoints, type PoolView, type Verdict } from './rig/rolling-analysis'
import { timelinePlot, type TimelineLine, type TimelineMarker } from './rig/timeline-plot'

// `npm run bench:rolling`: the pool through a rolling restart, as its metrics tell it. The built
// example (WORKERS=2) serves a steady open-loop load; the bench scrapes the primary's GET
// /metrics (Prometheus text for every worker) every BENCH_SCRAPE_MS, each scrape bracketed by
// two counts of the example's connections in information_schema.PROCESSLIST; it sends SIGUSR2
// (the primary replaces the workers one at a time) and scrapes on until the roll is done and
// BENCH_AFTER_MS more. It draws connections per state (summed, and per worker) and the acquire
// wait per interval, with PROCESSLIST dotted, and fails if a request failed, a scrape failed or
// could not be read, or the scraped total and PROCESSLIST disagree where no connection was
// opening or closing (rig/rolling-analysis.ts says why that is the tolerance). Method:
// bench/README.md.

const RATE = Number(process.env.BENCH_RATE ?? 200)
const SCRAPE_MILLIS = Number(process.env.BENCH_SCRAPE_MS ?? 150)
const BEFORE_MILLIS = Number(process.env.BENCH_BEFORE_MS ?? 3000)
const AFTER_MILLIS = Number(process.env.BENCH_AFTER_MS ?? 3000)
const DELAY_MILLIS = Number(process.env.BENCH_DELAY_MS ?? 0)
const WORKERS = 2
const PLOT_COPY = process.env.BENCH_PLOT
// A database of its own: PROCESSLIST is counted by database, and nothing else may use this one.
const DATABASE = 'fork_safe_db_rolling'
// Well under the scrape interval's worth of patience: the endpoint answers within its own bound.
const SCRAPE_TIMEOUT_MILLIS = 5000
const REQUEST_TIMEOUT_MILLIS = 5000
const ROLL_TIMEOUT_MILLIS = 120_000

const COLOURS = { idle: '#1f77b4', used: '#ff7f0e', total: '#222222', processlist: '#d62728', pending: '#9467bd' }
const WORKER_COLOURS = ['#17becf', '#bcbd22', '#e377c2', '#8c564b', '#7f7f7f', '#98df8a']

const seconds = (at: number, origin: number) => (at - origin) / 1000

function plot (views: readonly PoolView[], outcomes: readonly Outcome[], markers: TimelineMarker[], origin: number, end: number, notes: string[]): string {
  const at = (view: PoolView) => seconds(view.at, origin)
  const usable = views.filter((view) => view.ok)
  const pids = [...new Set(usable.flatMap((view) => [...view.perPid.keys()]))]
  const perWorker: TimelineLine[] = pids.map((pid, index) => ({
    name: `worker ${pid} (idle + used)`,
    colour: WORKER_COLOURS[index % WORKER_COLOURS.length],
    width: 1.3,
    style: 'dashed',
    step: true,
    points: usable.map((view) => {
      const entry = view.perPid.get(pid)
      return [at(view), entry === undefined ? Number.NaN : entry.idle + entry.used] as const
    })
  }))
  const waits = waitPoints(views)
  const latencies = outcomes.filter((outcome) => failures([outcome]).length === 0)
  const failed = failures(outcomes)
  return timelinePlot(
    `Rolling restart (SIGUSR2) of the example, ${WORKERS} workers, under ${RATE} requests/s: the pool's metrics`,
    notes,
    [
      {
        title: 'Connections by state, from GET /metrics (db.client.connection.count), and PROCESSLIST',
        unit: 'connections',
        height: 270,
        lines: [
          ...perWorker,
          { name: 'idle (all workers)', colour: COLOURS.idle, step: true, points: usable.map((view) => [at(view), view.idle] as const) },
          { name: 'used (all workers)', colour: COLOURS.used, step: true, points: usable.map((view) => [at(view), view.used] as const) },
          { name: 'idle + used', colour: COLOURS.total, width: 2.2, step: true, points: usable.map((view) => [at(view), view.idle + view.used] as const) },
          // Each count where it was read: the one before a scrape and the one after it.
          {
            name: 'PROCESSLIST',
            colour: COLOURS.processlist,
            width: 2,
            style: 'dotted',
            step: true,
            points: views.flatMap((view) => [[seconds(view.startedAt, origin), view.before] as const, [seconds(view.endedAt, origin), view.after] as const])
          },
          { name: 'pending requests', colour: COLOURS.pending, style: 'dashed', step: true, points: usable.map((view) => [at(view), view.pending] as const) }
        ]
      },
      {
        title: 'Acquire wait per scrape interval (db.client.connection.wait_time)',
        unit: 'ms',
        height: 200,
        log: true,
        lines: [
          { name: 'mean (Δsum/Δcount)', colour: '#2ca02c', points: waits.map((point) => [seconds(point.at, origin), point.meanMillis] as const) },
          // Not histogram_quantile()'s interpolation: below the first bucket's edge (1 ms) it
          // only restates the bucket's width. The edge is what the buckets know.
          { name: 'p99 ≤ (bucket edge)', colour: '#8c564b', style: 'dashed', step: true, points: waits.map((point) => [seconds(point.at, origin), point.p99BoundMillis] as const) }
        ]
      },
      {
        title: 'What the clients saw: each request\'s latency (failures in red, at the top)',
        unit: 'ms',
        height: 170,
        log: true,
        lines: [
          { name: 'answered', colour: '#1f77b4', dots: true, points: latencies.map((outcome) => [seconds(outcome.sentAt, origin), outcome.latency] as const) },
          { name: 'failed', colour: '#d62728', dots: true, points: failed.map((outcome) => [seconds(outcome.sentAt, origin), Math.max(1, outcome.latency)] as const) }
        ]
      }
    ],
    markers,
    0,
    seconds(end, origin)
  )
}

async function main (): Promise<void> {
  const database = await benchDatabase(DATABASE)
  const target = new URL(database.server.url)
  const proxy = DELAY_MILLIS > 0
    ? await TcpProxy.start({ target: { host: target.hostname, port: Number(target.port || 3306) }, delayMillis: DELAY_MILLIS })
    : undefined
  // Counted on a connection of the bench's own that names no database, so it is not counted.
  const counter = await createConnection({ uri: database.server.url })
  const count = async () => {
    const [rows] = await counter.query('SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ?', [DATABASE])
    return Number((rows as Array<{ n: number | string }>)[0].n)
  }
  const metricsPort = await freePort()
  let example: ExampleProcess | undefined
  try {
    if (await count() !== 0) throw new Error(`another process has connections to ${DATABASE}: the counts would not be the example's alone`)
    example = await ExampleProcess.start({
      MYSQL_URL: proxy === undefined ? database.url : proxy.urlFor(database.url),
      WORKERS: String(WORKERS),
      METRICS_HOST: '127.0.0.1',
      METRICS_PORT: String(metricsPort)
    }, { timeoutMillis: 60_000 })
    const origin = performance.now()
    const load = startPacedLoad({ port: example.port, path: userPath, rate: RATE, sockets: 16, timeoutMillis: REQUEST_TIMEOUT_MILLIS })
    const scraping = startScraping(new URL(`http://127.0.0.1:${metricsPort}/metrics`), count, SCRAPE_MILLIS, SCRAPE_TIMEOUT_MILLIS)
    // The steady state before the roll, for the picture: time has to pass, there is no event.
    await delay(BEFORE_MILLIS)
    const signalled = performance.now()
    example.child.kill('SIGUSR2')
    await example.waitFor((line) => line.msg === 'rolling restart finished', 1, ROLL_TIMEOUT_MILLIS)
    const rolled = performance.now()
    await delay(AFTER_MILLIS)
    const outcomes = await load.stop()
    const scrapes = await scraping.stop()
    const end = performance.now()
    example.child.kill('SIGTERM')
    const exit = await example.exited
    if (exit.code !== 0) throw new Error(`the example exited with ${exit.code ?? exit.signal}`)

    const views = scrapes.map(poolView)
    const verdictOf = verdicts(views)
    const tally = (verdict: Verdict) => verdictOf.filter((entry) => entry === verdict).length
    const changes = pidChanges(views)
    const stuck = stuckPending(views)
    const waits = waitPoints(views)
    const failed = failures(outcomes)
    const failedScrapes = scrapes.filter((scrape) => scrape.status !== 200)
    const skipped = views.flatMap((view) => view.skipped)
    const pids = [...new Set(views.flatMap((view) => [...view.perPid.keys()]))]
    const sorted = outcomes.map((outcome) => outcome.latency).sort((a, b) => a - b)
    const waitMeans = waits.map((point) => point.meanMillis).filter(Number.isFinite)
    const waitP99s = waits.map((point) => point.p99Millis).filter(Number.isFinite)
    const borrows = waits.reduce((sum, point) => sum + point.count, 0)
    const rollSeconds = (rolled - signalled) / 1000

    const markers: TimelineMarker[] = [
      { at: seconds(signalled, origin), label: 'SIGUSR2', colour: '#000000' },
      { at: seconds(rolled, origin), label: 'roll finished', colour: '#000000' },
      ...changes.map((change) => ({
        at: seconds(change.at, origin),
        label: `${change.change === 'appeared' ? '+' : '−'} ${change.pid}`,
        colour: change.change === 'appeared' ? '#2ca02c' : '#7f7f7f'
      }))
    ]
    const date = new Date().toISOString().slice(0, 10)
    const notes = [
      `Node ${process.version}, ${date}. The example's pool.min 2 per worker; an open-loop load of GET /users/:id; GET /metrics scraped every ${SCRAPE_MILLIS} ms` +
        (DELAY_MILLIS > 0 ? `; MySQL +${DELAY_MILLIS} ms each way.` : '.'),
      `Scraped total against PROCESSLIST: ${tally('agrees')} of ${views.length} scrapes agree, ${tally('moving')} were taken while a connection opened or closed, ` +
        `${tally('missing worker')} left a worker out, ${tally('disagrees')} disagree.`,
      `Requests: ${outcomes.length}, failed ${failed.length}. The roll took ${fixed(rollSeconds)} s; the largest mean acquire wait in an interval: ` +
        `${waitMeans.length === 0 ? 'n/a' : `${fixed(Math.max(...waitMeans), 2)} ms`}. Markers: + a worker's pid appears in the metrics, − it is gone.`
    ]
    const svg = plot(views, outcomes, markers, origin, end, notes)
    const path = await writeResult('rolling-restart.svg', svg)
    await writeResult('rolling-restart.json', JSON.stringify({
      origin,
      signalled,
      rolled,
      outcomes: outcomes.map(({ sentAt, latency, workerPid, status, error }) => ({ sentAt, latency, workerPid, status, error })),
      scrapes,
      verdicts: verdictOf,
      log: example.lines.filter((line) => line.name === 'primary')
    }))

    const perPid = pids.map((pid) => {
      const totals = views.flatMap((view) => {
        const entry = view.perPid.get(pid)
        return entry === undefined ? [] : [entry.idle + entry.used]
      })
      const seen = changes.filter((change) => change.pid === pid)
      return [pid, totals.length, spread(totals, 0), Math.max(...totals),
        seen.find((change) => change.change === 'appeared') === undefined ? 'before' : fixed(seconds(seen.find((change) => change.change === 'appeared')?.at ?? 0, origin)),
        seen.find((change) => change.change === 'left') === undefined ? 'after' : fixed(seconds(seen.find((change) => change.change === 'left')?.at ?? 0, origin))]
    })
    const summary = table(['figure', 'value'], [
      ['requests (failed)', `${outcomes.length} (${failed.length})`],
      ['request latency p50 / p99 / max, ms', `${fixed(median(sorted))} / ${fixed(percentile(sorted, 0.99))} / ${fixed(sorted[sorted.length - 1])}`],
      ['scrapes (failed; lines unread)', `${scrapes.length} (${failedScrapes.length}; ${skipped.length})`],
      ['scrape round trip ms, median (min-max)', spread(scrapes.map((scrape) => scrape.scrapeMillis))],
      ['scraped total vs PROCESSLIST: agree / moving / worker left out / disagree', `${tally('agrees')} / ${tally('moving')} / ${tally('missing worker')} / ${tally('disagrees')}`],
      ['connections, idle + used, median (min-max)', spread(views.filter((view) => view.ok).map((view) => view.idle + view.used), 0)],
      ['PROCESSLIST, median (min-max)', spread(views.map((view) => view.after), 0)],
      ['pending requests, max', Math.max(0, ...views.map((view) => view.pending))],
      ['acquire wait, mean per interval, ms: median (min-max)', spread(waitMeans, 3)],
      ['acquire wait, p99 per interval (histogram_quantile), ms: median (min-max)', spread(waitP99s, 3)],
      ['acquire wait, p99 at most (bucket edge) per interval, ms: median (min-max)', spread(waits.map((point) => point.p99BoundMillis).filter(Number.isFinite), 0)],
      ['borrows counted by wait_time (workers seen in consecutive scrapes) / requests', `${borrows} / ${outcomes.length}`],
      ['SIGUSR2 to "rolling restart finished", s', fixed(rollSeconds)],
      ['worker pids seen', pids.join(', ')]
    ])
    const workers = table(['pid', 'scrapes', 'connections, median (min-max)', 'max', 'appeared at s', 'left at s'], perPid)
    process.stdout.write(`\nRolling restart: ${WORKERS} workers, ${RATE} requests/s, scrape every ${SCRAPE_MILLIS} ms, ` +
      `Node ${process.version}\n\n${summary}\n\nPer worker:\n\n${workers}\n\nplot: ${path}\n`)

    const problems: string[] = []
    if (failed.length > 0) problems.push(`${failed.length} request(s) failed: ${[...new Set(failed.map((outcome) => outcome.error ?? outcome.status))].join(', ')}`)
    if (failedScrapes.length > 0) problems.push(`${failedScrapes.length} scrape(s) failed: ${[...new Set(failedScrapes.map((scrape) => scrape.error ?? scrape.status))].join(', ')}`)
    if (skipped.length > 0) problems.push(`the exposition had ${skipped.length} line(s) the reader could not read, e.g. ${JSON.stringify(skipped[0])}`)
    if (tally('disagrees') > 0) problems.push(`${tally('disagrees')} scrape(s) disagree with PROCESSLIST while no connection opened or closed`)
    if (tally('agrees') < views.length / 2) problems.push(`only ${tally('agrees')} of ${views.length} scrapes agree with PROCESSLIST: too few to call the counts checked`)
    if (!views.some((view) => view.perPid.size > 0)) problems.push('no db_client_connection_count series with a process_pid in any scrape')
    for (const run of stuck) {
      problems.push(`worker ${run.pid} reported pending requests beside idle connections in ${run.scrapes} scrapes in a row from ${fixed(seconds(run.from, origin))} s: db_client_connection_pending_requests is stuck`)
    }
    if (borrows === 0) problems.push('db_client_connection_wait_time counted no borrow')
    if (changes.filter((change) => change.change === 'appeared').length < WORKERS || changes.filter((change) => change.change === 'left').length < WORKERS) {
      problems.push(`the metrics did not show every worker replaced: ${JSON.stringify(changes)}`)
    }
    if (problems.length > 0) throw new Error(`rolling restart bench failed:\n- ${problems.join('\n- ')}`)
    // Only a run that passed becomes the README's picture.
    if (PLOT_COPY !== undefined && PLOT_COPY !== '') {
      await mkdir(dirname(resolve(PLOT_COPY)), { recursive: true })
      await copyFile(path, resolve(PLOT_COPY))
      process.stdout.write(`copied to ${PLOT_COPY}\n`)
    }
  } finally {
    await example?.kill()
    await counter.end()
    await proxy?.close()
    await database.release()
  }
}

main().catch(fail)
