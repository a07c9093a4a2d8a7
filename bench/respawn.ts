import { join } from 'node:path'
import { ownDatabase } from '../example-app/database'
import { prepareSchema } from '../example-app/schema'
import { ExampleProcess, EXAMPLE_ENTRY } from '../support/example-process'
import { failures, startLoad } from '../support/http-load'
import { resolveServer } from '../support/server-url'
import { TcpProxy } from '../support/tcp-proxy'
import { raiseHarnessPriority } from './harness-priority'
import { watchHarnessStalls } from './harness-stalls'
import { latencyPlot } from './latency-plot'
import { fixed, median, percentile, table, writeResult } from './report'
import { harnessLateness, harnessStallsDuring, newWorkers, slowBeyondHarness, slowAmongFirsts, slowDuringStartUp, slowInsideAndOutside, steadyMedian, type NewWorker } from './respawn-workers'

// `npm run bench:respawn`: the uWSGI max-requests story. Two workers recycled every 100
// responses, MySQL 15 ms away each way (a loopback proxy), steady load. A request that has to
// wait for a connection to be opened, or that runs cold JavaScript, is much slower than the
// median: count those. Per new worker: its first request against the steady p50, and how long
// it took from fork to listening. BENCH_RUNS repeats every variant (runs interleaved).

const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 3000)
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4)
const DELAY_MILLIS = Number(process.env.BENCH_DELAY_MS ?? 15)
const RUNS = Number(process.env.BENCH_RUNS ?? 1)
const ONLY = process.env.BENCH_VARIANTS?.split(',')
const COLD_FACTOR = 1.8
// A new worker's first requests are where cold code would show.
const FIRSTS = 10

interface Variant { name: string, slug: string, entry: string, env: Record<string, string> }

const ALL_VARIANTS: Variant[] = [
  { name: 'plugin, warm pool + warm request path, start-ups at low priority (default)', slug: 'plugin-warm', entry: EXAMPLE_ENTRY, env: { DB_WARMUP: 'true' } },
  { name: 'plugin, warm, start-ups at the normal priority (STARTUP_NICE=0)', slug: 'plugin-warm-normal-priority', entry: EXAMPLE_ENTRY, env: { DB_WARMUP: 'true', STARTUP_NICE: '0' } },
  { name: 'plugin, warm, 5 warm-up rounds instead of 20 (WARMUP_ROUNDS=5)', slug: 'plugin-warm-5-rounds', entry: EXAMPLE_ENTRY, env: { DB_WARMUP: 'true', WARMUP_ROUNDS: '5' } },
  { name: 'plugin, warm pool only (WARMUP_ROUNDS=0)', slug: 'plugin-warm-pool', entry: EXAMPLE_ENTRY, env: { DB_WARMUP: 'true', WARMUP_ROUNDS: '0' } },
  { name: 'plugin, warmup: false', slug: 'plugin-lazy', entry: EXAMPLE_ENTRY, env: { DB_WARMUP: 'false', WARMUP_ROUNDS: '0' } },
  { name: 'plain knex, lazy (baseline)', slug: 'plain-knex', entry: join(__dirname, 'plain-knex-cluster.js'), env: {} }
]
const VARIANTS = ONLY === undefined ? ALL_VARIANTS : ALL_VARIANTS.filter((variant) => ONLY.includes(variant.slug))

function spread (values: readonly number[], digits = 1): string {
  if (values.length === 0) return 'n/a'
  const sorted = [...values].sort((a, b) => a - b)
  return `${fixed(median(sorted), digits)} (${fixed(sorted[0], digits)}-${fixed(sorted[sorted.length - 1], digits)})`
}

async function main (): Promise<void> {
  const server = await resolveServer()
  // After the server: a private mariadbd started here keeps the normal priority.
  const harness = raiseHarnessPriority()
  const stalls = watchHarnessStalls()
  // The example's own database (created if missing), never the shared `test` one.
  const url = await ownDatabase(server.url)
  await prepareSchema(url)
  const target = new URL(server.url)
  const proxy = await TcpProxy.start({ target: { host: target.hostname, port: Number(target.port || 3306) }, delayMillis: DELAY_MILLIS })
  const rows: Array<Array<string | number>> = []
  const workerRows: Array<Array<string | number>> = []
  const series = []
  try {
    for (let run = 1; run <= RUNS; run++) {
      for (const variant of VARIANTS) {
        const app = await ExampleProcess.start(
          { MYSQL_URL: proxy.urlFor(url), WORKERS: '2', MAX_REQUESTS: '100', DB_POOL_MIN: String(CONCURRENCY), ...variant.env },
          { entry: variant.entry, command: harness.command(variant.entry) }
        )
        const outcomes = await startLoad({ port: app.port, path: (i) => `/users/${(i % 1000) + 1}`, requests: REQUESTS, concurrency: CONCURRENCY }).done
        app.child.kill('SIGTERM')
        await app.exited
        const latencies = outcomes.map((outcome) => outcome.latency)
        const sorted = [...latencies].sort((a, b) => a - b)
        const p50 = median(latencies)
        const steady = steadyMedian(outcomes)
        const fresh: NewWorker[] = newWorkers(app.lines, outcomes)
        const ratios = fresh.map((worker) => worker.firstLatency / steady)
        workerRows.push([variant.name, run, fresh.length, fresh.filter((worker) => worker.lowered).length, fixed(steady), spread(fresh.map((worker) => worker.firstLatency)),
          spread(ratios, 2), ratios.filter((ratio) => ratio > 2).length, spread(fresh.map((worker) => worker.forkToListeningMillis), 0),
          spread(fresh.map((worker) => worker.startUpCpuMillis).filter((cpu) => !Number.isNaN(cpu)), 0)])
        const cold = latencies.filter((ms) => ms > COLD_FACTOR * p50).length
        // Against the share of all requests sent then: replacements start for much of a run.
        const coldDuringStartUp = `${slowDuringStartUp(app.lines, outcomes, COLD_FACTOR * p50)} (all requests: ${fixed((100 * slowDuringStartUp(app.lines, outcomes, -1)) / outcomes.length, 0)}%)`
        const respawns = app.lines.filter((line) => line.msg === 'worker started').length - 2
        // The plugin's own count of queries that waited for a connect, summed over every worker
        // that drained (the plain-knex baseline has no such telemetry).
        const drained = app.lines.filter((line) => line.msg === 'worker drained' && typeof line.coldAcquires === 'number')
        const reported = drained.length === 0 ? 'n/a' : String(drained.reduce((sum, line) => sum + Number(line.coldAcquires), 0))
        // Where a slow request spent its time: in its worker (its own log line), or on the way.
        const { split, workerMedian } = slowInsideAndOutside(app.lines, outcomes, COLD_FACTOR * p50)
        const where = split.length === 0 ? 'n/a' : `${spread(split.map((slow) => slow.inside))} / ${spread(split.map((slow) => slow.outside))} (worker median ${fixed(workerMedian)})`
        const late = `${spread(harnessLateness(outcomes, proxy.lateWrites, COLD_FACTOR * p50))} / ${harnessStallsDuring(outcomes, stalls.stalls, COLD_FACTOR * p50, stalls.gcWithin)}`
        rows.push([variant.name, run, outcomes.length, respawns, fixed(p50), fixed(percentile(sorted, 0.99)), fixed(percentile(sorted, 0.999)), fixed(sorted[sorted.length - 1]),
          `${cold} (${fixed((100 * cold) / outcomes.length, 2)}%)`, slowBeyondHarness(outcomes, proxy.lateWrites, stalls.stalls, COLD_FACTOR * p50), slowAmongFirsts(outcomes, COLD_FACTOR * p50, FIRSTS), coldDuringStartUp, where, late, reported, failures(outcomes).length])
        series.push({ name: variant.name, latencies, threshold: COLD_FACTOR * p50 })
        // The raw material, for another look at a run: every request, and when the harness was behind.
        await writeResult(`respawn-${variant.slug}-run${run}.json`, JSON.stringify({
          variant: variant.name,
          outcomes: outcomes.map(({ sentAt, latency, workerPid, status }) => ({ sentAt, latency, workerPid, status })),
          newWorkers: fresh,
          lateWrites: proxy.lateWrites.filter(({ at }) => at >= outcomes[0].sentAt),
          stalls: stalls.stalls.filter(({ at }) => at >= outcomes[0].sentAt)
        }, null, 0))
        process.stderr.write(`done: ${variant.name}, run ${run}\n`)
      }
    }
  } finally {
    stalls.stop()
    await proxy.close()
    await server.privateServer?.destroy()
  }
  const report = table(['variant', 'run', 'requests', 'respawns', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', `cold (> ${COLD_FACTOR}x p50)`, 'of those, still cold with the time the harness was behind taken off', `of those, among their worker's first ${FIRSTS}`, 'of those, sent while a replacement started', 'of those, ms in their worker / on the way, median (min-max)', 'of those, ms the harness\'s proxy was behind within the request, median (min-max) / the harness\'s stall that overlaps it most: ms late (ms on CPU, of which GC / waiting for a CPU / stolen)', 'cold acquires (plugin count)', 'failed'], rows)
  const perWorker = table(['variant', 'run', 'new workers', 'of those, started at low priority', 'steady p50 ms', 'first request ms, median (min-max)', 'first / steady p50, median (min-max)',
    'first > 2x steady p50', 'fork to listening ms, median (min-max)', 'CPU ms from fork to listening, median (min-max)'], workerRows)
  const plot = await writeResult('respawn.svg', latencyPlot(`Respawn benchmark: 2 workers, MAX_REQUESTS=100, MySQL +${DELAY_MILLIS} ms each way`, series))
  process.stdout.write(`\nRespawn benchmark: ${REQUESTS} requests per variant and run, ${CONCURRENCY} concurrent clients, 2 workers (pool.min ${CONCURRENCY}), MAX_REQUESTS=100, proxy delay ${DELAY_MILLIS} ms each way, ${RUNS} run(s), ${harness.describe}\n\n${report}\n\nNew workers (every replacement):\n\n${perWorker}\n\nplot: ${plot}\n`)
}

main().catch((error: unknown) => {
  process.stderr.write(`${String((error as Error)?.stack ?? error)}\n`)
  process.exit(1)
})
