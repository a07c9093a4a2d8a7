import { ownDatabase } from '../example-app/database'
import { prepareSchema } from '../example-app/schema'
import { resolveServer } from '../support/server-url'
import { runRetireStress, type SchedulingPolicy } from '../support/retire-stress'
import { table } from './report'

// `npm run stress:retire`: the retire stress scenario (support/retire-stress.ts) run
// STRESS_RUNS times (default 10) under each scheduling policy, one row per run. The test suite
// runs the same scenario a few times per policy; this is the command behind the README's numbers.

const RUNS = Number(process.env.STRESS_RUNS ?? 10)
const SECONDS = Number(process.env.STRESS_SECONDS ?? 10)
// The scenario of test/retire-stress.test.ts.
const SCENARIO = { workers: 3, freshClients: 4, keepAliveClients: 1 }
const POLICIES = (process.env.STRESS_POLICIES ?? 'rr,none').split(',') as SchedulingPolicy[]

async function main (): Promise<void> {
  const server = await resolveServer()
  // The example's own database (created if missing), never the shared `test` one.
  const url = await ownDatabase(server.url)
  await prepareSchema(url)
  const rows: Array<Array<string | number>> = []
  const totals = new Map<SchedulingPolicy, { runs: number, failedRuns: number, requests: number, lost: number }>()
  try {
    for (const policy of POLICIES) {
      for (let run = 1; run <= RUNS; run++) {
        const result = await runRetireStress({ mysqlUrl: url, policy, seconds: SECONDS, ...SCENARIO })
        const shares = [...result.perWorker.values()].sort((a, b) => b - a)
        const busiest = shares.length === 0 ? 0 : shares[0] / result.outcomes.length
        rows.push([policy, run, result.outcomes.length, result.retirements, result.failed.length, result.hung, result.held.length,
          `${result.exit.code ?? result.exit.signal}`, `${(100 * busiest).toFixed(1)}%`,
          result.failed.map((outcome) => outcome.error ?? outcome.status).join(' ')])
        const total = totals.get(policy) ?? { runs: 0, failedRuns: 0, requests: 0, lost: 0 }
        total.runs += 1
        total.requests += result.outcomes.length
        total.lost += result.failed.length
        if (result.failed.length > 0 || result.held.length > 0) total.failedRuns += 1
        totals.set(policy, total)
        process.stderr.write(`${policy} run ${run}: ${result.outcomes.length} requests, ${result.failed.length} failed (${result.hung} hung), ${result.held.length} held by the primary\n`)
      }
    }
  } finally {
    await server.privateServer?.destroy()
  }
  const perRun = table(['policy', 'run', 'requests', 'retirements', 'failed', 'hung', 'held by primary', 'exit', 'busiest worker share', 'errors'], rows)
  const summary = table(['policy', 'runs', 'runs with a loss', 'requests', 'lost'],
    [...totals].map(([policy, total]) => [policy, total.runs, total.failedRuns, total.requests, total.lost]))
  process.stdout.write(`\nRetire stress: at least ${SECONDS} s of load per run (${SCENARIO.freshClients} fresh-connection + ${SCENARIO.keepAliveClients} keep-alive clients, 5 s client timeout), WORKERS=${SCENARIO.workers}, MAX_REQUESTS=25, 3 rolling restarts per run\n\n${perRun}\n\n${summary}\n`)
}

main().catch((error: unknown) => {
  process.stderr.write(`${String((error as Error)?.stack ?? error)}\n`)
  process.exit(1)
})
