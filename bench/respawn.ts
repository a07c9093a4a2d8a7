import { copyFile, mkdir } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { failures, startLoad, type Outcome } from '../support/http-load'
import { TcpProxy } from '../support/tcp-proxy'
import { APP_ENTRY, ClusterApp } from './rig/cluster/process'
import type { AppEvent } from './rig/cluster/messages'
import { benchDatabase, userPath } from './rig/database'
import { raiseHarnessPriority } from './rig/harness-priority'
import { watchHarnessStalls, type StallWatch } from './rig/harness-stalls'
import { latencyPlot, type PlotSeries } from './rig/latency-plot'
import { fail, fixed, median, percentile, spread, table, writeResult } from './rig/report'
import {
  harnessLateness, harnessStallsDuring, newWorkers, slowAmongFirsts, slowBeyondHarness, slowDuringStartUp,
  slowInsideAndOutside, steadyMedian
} from './rig/respawn-analysis'

// `npm run bench:respawn`: the uWSGI max-requests story. The bench's own cluster app
// (bench/rig/cluster/) with two workers recycled every 100 responses, MySQL 15 ms away each way
// (a loopback proxy), steady load. A request that has to wait for a connection to be opened, or
// that runs cold JavaScript, is much slower than the median: count those. Per new worker: its
// first request against the steady p50, and how long it took from fork to listening.
// BENCH_RUNS repeats every variant (runs interleaved). Method and history: bench/README.md.

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 3000)
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4)
const DELAY_MILLIS = Number(process.env.BENCH_DELAY_MS ?? 15)
const RUNS = Number(process.env.BENCH_RUNS ?? 1)
// Also copy the plot there (relative to the working directory): the README's picture is
// docs/images/respawn-latency.svg, made with BENCH_PLOT=docs/images/respawn-latency.svg.
const PLOT_COPY = process.env.BENCH_PLOT
const MAX_REQUESTS = 100
const COLD_FACTOR = 1.8
// A new worker's first requests are where cold code would show.
const FIRSTS = 10

interface RespawnVariant { name: string, slug: string, env: Record<string, string> }

const ALL_VARIANTS: RespawnVariant[] = [
  { name: 'plugin, warm pool + warm request path (default)', slug: 'plugin-warm', env: {} },
  { name: 'plugin, warm, 5 warm-up rounds instead of 20', slug: 'plugin-warm-5-rounds', env: { WARMUP_ROUNDS: '5' } },
  { name: 'plugin, warm pool only (no request-path warm-up)', slug: 'plugin-warm-pool', env: { WARMUP_ROUNDS: '0' } },
  { name: 'plugin, warmup: false', slug: 'plugin-lazy', env: { DB_WARMUP: 'false', WARMUP_ROUNDS: '0' } },
  { name: 'plain knex, lazy (baseline)', slug: 'plain-knex', env: { APP_POOL: 'knex' } }
]

function chosen (): RespawnVariant[] {
  const only = process.env.BENCH_VARIANTS?.split(',')
  if (only === undefined) return ALL_VARIANTS
  const unknown = only.filter((slug) => !ALL_VARIANTS.some((variant) => variant.slug === slug))
  if (unknown.length > 0) {
    const slugs = ALL_VARIANTS.map((variant) => variant.slug).join(', ')
    throw new Error(`no variant ${unknown.join(', ')}; expected some of ${slugs}`)
  }
  return ALL_VARIANTS.filter((variant) => only.includes(variant.slug))
}

interface Run { variant: RespawnVariant, run: number, outcomes: Outcome[], events: AppEvent[] }

/** One line of the main table: the run's latencies, and how many slow requests the app answers for. */
function runRow ({ variant, run, outcomes, events }: Run, proxy: TcpProxy, stalls: StallWatch): Array<string | number> {
  const latencies = outcomes.map((outcome) => outcome.latency)
  const sorted = [...latencies].sort((a, b) => a - b)
  const threshold = COLD_FACTOR * median(latencies)
  const cold = latencies.filter((ms) => ms > threshold).length
  const respawns = events.filter((event) => event.type === 'forked' && event.replaces !== null).length
  // Against the share of all requests sent then: replacements start for much of a run.
  const startingShare = fixed((100 * slowDuringStartUp(events, outcomes, -1)) / outcomes.length, 0)
  const coldDuringStartUp = `${slowDuringStartUp(events, outcomes, threshold)} (all requests: ${startingShare}%)`
  // The plugin's own count of queries that waited for a connect, summed over every worker that
  // closed (the plain-knex baseline has no such count).
  const counts = events.flatMap((event) =>
    event.type === 'closing' && event.coldAcquires !== null ? [event.coldAcquires] : [])
  const coldAcquires = counts.length === 0 ? 'n/a' : String(counts.reduce((sum, count) => sum + count, 0))
  const { split, workerMedian } = slowInsideAndOutside(events, outcomes, threshold)
  const where = split.length === 0
    ? 'n/a'
    : `${spread(split.map((slow) => slow.inside))} / ${spread(split.map((slow) => slow.outside))} ` +
      `(worker median ${fixed(workerMedian)})`
  const late = `${spread(harnessLateness(outcomes, proxy.lateWrites, threshold))} / ` +
    harnessStallsDuring(outcomes, stalls.stalls, threshold, stalls.gcWithin)
  return [
    variant.name, run, outcomes.length, respawns, fixed(median(latencies)), fixed(percentile(sorted, 0.99)),
    fixed(percentile(sorted, 0.999)), fixed(sorted[sorted.length - 1]),
    `${cold} (${fixed((100 * cold) / outcomes.length, 2)}%)`,
    slowBeyondHarness(outcomes, proxy.lateWrites, stalls.stalls, threshold),
    slowAmongFirsts(outcomes, threshold, FIRSTS),
    coldDuringStartUp, where, late, coldAcquires, failures(outcomes).length
  ]
}

/** One line of the new-workers table. */
function workerRow ({ variant, run, outcomes, events }: Run): Array<string | number> {
  const steady = steadyMedian(outcomes)
  const fresh = newWorkers(events, outcomes)
  const ratios = fresh.map((worker) => worker.firstLatency / steady)
  return [
    variant.name, run, fresh.length, fixed(steady),
    spread(fresh.map((worker) => worker.firstLatency)), spread(ratios, 2),
    ratios.filter((ratio) => ratio > 2).length, spread(fresh.map((worker) => worker.forkToListeningMillis), 0),
    spread(fresh.map((worker) => worker.startUpCpuMillis), 0)
  ]
}

const RUN_COLUMNS = [
  'variant', 'run', 'requests', 'respawns', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', `cold (> ${COLD_FACTOR}x p50)`,
  'of those, still cold with the harness\'s lateness taken off', `of those, among their worker's first ${FIRSTS}`,
  'of those, sent while a replacement started', 'of those, ms in their worker / on the way',
  'of those, ms the proxy was behind / the harness\'s longest stall', 'cold acquires (plugin count)', 'failed'
]
const WORKER_COLUMNS = [
  'variant', 'run', 'new workers', 'steady p50 ms', 'first request ms', 'first / steady p50', 'first > 2x steady p50',
  'fork to listening ms', 'CPU ms from start to listening'
]

async function main (): Promise<void> {
  const database = await benchDatabase()
  const harness = raiseHarnessPriority()
  const stalls = watchHarnessStalls()
  const target = new URL(database.server.url)
  const proxy = await TcpProxy.start({
    target: { host: target.hostname, port: Number(target.port || 3306) },
    delayMillis: DELAY_MILLIS
  })
  const runs: Run[] = []
  try {
    for (let run = 1; run <= RUNS; run++) {
      for (const variant of chosen()) {
        const env = {
          MYSQL_URL: proxy.urlFor(database.url),
          WORKERS: '2',
          MAX_REQUESTS: String(MAX_REQUESTS),
          DB_POOL_MIN: String(CONCURRENCY),
          ...variant.env
        }
        const app = await ClusterApp.start(env, harness.command(APP_ENTRY))
        const load = startLoad({ port: app.port, path: userPath, requests: REQUESTS, concurrency: CONCURRENCY })
        const outcomes = await load.done
        const exit = await app.stop()
        if (exit.code !== 0) {
          throw new Error(`the cluster app exited with ${exit.code ?? exit.signal} (${variant.slug})`)
        }
        runs.push({ variant, run, outcomes, events: app.events })
        // The raw material, for another look at a run: every request, and when the harness was behind.
        await writeResult(`respawn-${variant.slug}-run${run}.json`, JSON.stringify({
          variant: variant.name,
          outcomes: outcomes.map(({ sentAt, latency, workerPid, status }) => ({ sentAt, latency, workerPid, status })),
          events: app.events,
          lateWrites: proxy.lateWrites.filter(({ at }) => at >= outcomes[0].sentAt),
          stalls: stalls.stalls.filter(({ at }) => at >= outcomes[0].sentAt)
        }))
        process.stderr.write(`done: ${variant.name}, run ${run}\n`)
      }
    }
  } finally {
    stalls.stop()
    await proxy.close()
    await database.release()
  }
  const report = table(RUN_COLUMNS, runs.map((run) => runRow(run, proxy, stalls)))
  const perWorker = table(WORKER_COLUMNS, runs.map(workerRow))
  const series: PlotSeries[] = runs.map(({ variant, outcomes }) => {
    const latencies = outcomes.map((outcome) => outcome.latency)
    return { name: variant.name, latencies, threshold: COLD_FACTOR * median(latencies) }
  })
  // A picture kept in the repository names its day and Node: the machine's weather shows in it.
  const title = `Respawn benchmark: 2 workers, MAX_REQUESTS=${MAX_REQUESTS}, MySQL +${DELAY_MILLIS} ms each way, ` +
    `Node ${process.version}, ${new Date().toISOString().slice(0, 10)}`
  const plot = await writeResult('respawn.svg', latencyPlot(title, series))
  if (PLOT_COPY !== undefined && PLOT_COPY !== '') {
    await mkdir(dirname(resolve(PLOT_COPY)), { recursive: true })
    await copyFile(plot, resolve(PLOT_COPY))
  }
  const heading = `Respawn benchmark: ${REQUESTS} requests per variant and run, ${CONCURRENCY} concurrent clients, ` +
    `2 workers (pool.min ${CONCURRENCY}), MAX_REQUESTS=${MAX_REQUESTS}, proxy delay ${DELAY_MILLIS} ms each way, ` +
    `${RUNS} run(s), Node ${process.version}, ${harness.describe}`
  const columns = 'Timings are "median (min-max)" over the slow requests or the new workers.'
  process.stdout.write(`\n${heading}\n${columns}\n\n${report}\n\n` +
    `New workers (every replacement):\n\n${perWorker}\n\nplot: ${plot}${PLOT_COPY ? ` (and ${PLOT_COPY})` : ''}\n`)
}

main().catch(fail)
