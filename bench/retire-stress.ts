import { setTimeout as delay } from 'node:timers/promises'
import { heldConnections } from '../support/held-sockets'
import { failures, HUNG, startLoad, type Outcome } from '../support/http-load'
import { ClusterApp } from './rig/cluster/process'
import { benchDatabase, userPath } from './rig/database'
import { fail, table } from './rig/report'

// `npm run stress:retire`: workers retire as often as they can while clients send requests, and
// nothing may be lost, under each of Node's cluster scheduling policies (issue 12). The bench's
// cluster app (bench/rig/cluster/) runs 3 workers recycled every 25 responses and three rolling
// restarts (SIGHUP) one after the other, under 4 clients that open a fresh connection per request
// (under round-robin each is a handoff from the primary) and 1 on a kept-alive connection. A
// request unanswered after 5 s is hung; once every client has its answer, the primary must hold
// no connection. STRESS_RUNS runs (default 10) per policy, one row per run.

const RUNS = Number(process.env.STRESS_RUNS ?? 10)
const SECONDS = Number(process.env.STRESS_SECONDS ?? 10)
const POLICIES = (process.env.STRESS_POLICIES ?? 'rr,none').split(',')
const SCENARIO = { workers: 3, maxRequests: 25, rolls: 3, freshClients: 4, keepAliveClients: 1, timeoutMillis: 5000 }
const ROLL_TIMEOUT_MILLIS = 90_000

interface StressRun { outcomes: Outcome[], retirements: number, held: number, exit: string, busiestShare: number }

async function stress (url: string, policy: string): Promise<StressRun> {
  const app = await ClusterApp.start({
    MYSQL_URL: url,
    WORKERS: String(SCENARIO.workers),
    MAX_REQUESTS: String(SCENARIO.maxRequests),
    NODE_CLUSTER_SCHED_POLICY: policy
  })
  try {
    const started = performance.now()
    const common = {
      port: app.port, path: userPath, requests: Number.MAX_SAFE_INTEGER, timeoutMillis: SCENARIO.timeoutMillis
    }
    const fresh = startLoad({ ...common, concurrency: SCENARIO.freshClients, keepAlive: false })
    const kept = startLoad({ ...common, concurrency: SCENARIO.keepAliveClients, keepAlive: true })
    try {
      for (let roll = 1; roll <= SCENARIO.rolls; roll++) {
        app.child.kill('SIGHUP')
        await app.waitFor((event) => event.type === 'rolled', roll, ROLL_TIMEOUT_MILLIS)
      }
      // The rest of the time is load with recycles only: a fixed duration, not a wait for an event.
      const left = SECONDS * 1000 - (performance.now() - started)
      if (left > 0) await delay(left)
    } finally {
      fresh.stop()
      kept.stop()
    }
    const outcomes = [...await fresh.done, ...await kept.done]
    // Every client has its answer or gave up: nothing may be left in the primary's hands.
    const held = (await heldConnections(app.child.pid ?? 0, app.port)).length
    const retirements = app.events.filter((event) => event.type === 'exited' && event.asked).length
    const exit = await app.stop()
    const perWorker = new Map<number, number>()
    for (const { workerPid } of outcomes) {
      if (workerPid !== undefined) perWorker.set(workerPid, (perWorker.get(workerPid) ?? 0) + 1)
    }
    const busiest = Math.max(0, ...perWorker.values())
    const busiestShare = busiest / outcomes.length
    return { outcomes, retirements, held, exit: String(exit.code ?? exit.signal), busiestShare }
  } finally {
    await app.kill()
  }
}

async function main (): Promise<void> {
  const { url, release } = await benchDatabase()
  const rows: Array<Array<string | number>> = []
  const totals = new Map<string, { runs: number, lossy: number, requests: number, lost: number }>()
  try {
    for (const policy of POLICIES) {
      for (let run = 1; run <= RUNS; run++) {
        const result = await stress(url, policy)
        const failed = failures(result.outcomes)
        const hung = failed.filter((outcome) => outcome.error === HUNG).length
        rows.push([
          policy, run, result.outcomes.length, result.retirements, failed.length, hung, result.held, result.exit,
          `${(100 * result.busiestShare).toFixed(1)}%`,
          failed.map((outcome) => outcome.error ?? outcome.status).join(' ')
        ])
        const total = totals.get(policy) ?? { runs: 0, lossy: 0, requests: 0, lost: 0 }
        total.runs += 1
        total.requests += result.outcomes.length
        total.lost += failed.length
        if (failed.length > 0 || result.held > 0) total.lossy += 1
        totals.set(policy, total)
        process.stderr.write(`${policy} run ${run}: ${result.outcomes.length} requests, ` +
          `${failed.length} failed (${hung} hung), ` +
          `${result.held} held by the primary\n`)
      }
    }
  } finally {
    await release()
  }
  const perRun = table([
    'policy', 'run', 'requests', 'retirements', 'failed', 'hung', 'held by primary', 'exit', 'busiest worker share',
    'errors'
  ], rows)
  const summary = table(['policy', 'runs', 'runs with a loss', 'requests', 'lost'],
    [...totals].map(([policy, total]) => [policy, total.runs, total.lossy, total.requests, total.lost]))
  const heading = `Retire stress: at least ${SECONDS} s of load per run (${SCENARIO.freshClients} fresh-connection + ` +
    `${SCENARIO.keepAliveClients} keep-alive clients, ${SCENARIO.timeoutMillis / 1000} s client timeout), ` +
    `${SCENARIO.workers} workers, MAX_REQUESTS=${SCENARIO.maxRequests}, ${SCENARIO.rolls} rolling restarts per run, ` +
    `Node ${process.version}`
  process.stdout.write(`\n${heading}\n\n${perRun}\n\n${summary}\n`)
}

main().catch(fail)
