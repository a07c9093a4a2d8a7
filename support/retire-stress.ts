import { setTimeout as delay } from 'node:timers/promises'
import { ExampleProcess, EXAMPLE_ENTRY } from './example-process'
import { heldConnections, type HeldSocket } from './held-sockets'
import { failures, HUNG, startLoad, type Outcome } from './http-load'

// The scenario of issue 12: workers retire as often as they can (a small MAX_REQUESTS, and
// rolling restarts one after the other) while clients send requests, some on a fresh TCP
// connection each (every request is a new handoff from the primary under round-robin) and some
// on kept-alive connections (drained with `Connection: close`). A request that gets no answer
// within `timeoutMillis` is hung: under round-robin that is a connection the primary accepted
// and handed to a worker that left without acknowledging it.

export type SchedulingPolicy = 'rr' | 'none'

export interface StressOptions {
  mysqlUrl: string
  policy: SchedulingPolicy
  /** How long the load runs; the rolling restarts happen within it. */
  seconds?: number
  /** Rolls (SIGUSR2) one after the other, each once the previous one has finished. */
  rolls?: number
  maxRequests?: number
  workers?: number
  freshClients?: number
  keepAliveClients?: number
  timeoutMillis?: number
  entry?: string
  env?: Record<string, string>
}

export interface StressResult {
  policy: SchedulingPolicy
  outcomes: Outcome[]
  /** Transport errors and 5xx, hung requests included. */
  failed: Outcome[]
  hung: number
  /** Workers that retired while the load ran (recycles and rolls; the final shutdown not counted). */
  retirements: number
  /** Connections the primary still held once every client had its answer. */
  held: HeldSocket[]
  exit: { code: number | null, signal: NodeJS.Signals | null }
  /** Responses per worker pid: how evenly the policy spread the load. */
  perWorker: Map<number, number>
}

const userPath = (index: number) => `/users/${(index % 1000) + 1}`
const ROLL_TIMEOUT_MILLIS = 90_000

export async function runRetireStress (options: StressOptions): Promise<StressResult> {
  const { seconds = 8, rolls = 3, maxRequests = 25, workers = 2, freshClients = 3, keepAliveClients = 2, timeoutMillis = 5000 } = options
  const example = await ExampleProcess.start({
    MYSQL_URL: options.mysqlUrl,
    WORKERS: String(workers),
    MAX_REQUESTS: String(maxRequests),
    NODE_CLUSTER_SCHED_POLICY: options.policy,
    ...options.env
  }, { entry: options.entry ?? EXAMPLE_ENTRY })
  try {
    return await stress(example, options.policy, { seconds, rolls, freshClients, keepAliveClients, timeoutMillis })
  } finally {
    await example.kill()
  }
}

async function stress (
  example: ExampleProcess,
  policy: SchedulingPolicy,
  { seconds, rolls, freshClients, keepAliveClients, timeoutMillis }: Required<Pick<StressOptions, 'seconds' | 'rolls' | 'freshClients' | 'keepAliveClients' | 'timeoutMillis'>>
): Promise<StressResult> {
  const primaryPid = example.child.pid
  if (primaryPid === undefined) throw new Error('no primary pid')
  const started = performance.now()
  const common = { port: example.port, path: userPath, requests: Number.MAX_SAFE_INTEGER, timeoutMillis }
  const fresh = startLoad({ ...common, concurrency: freshClients, keepAlive: false })
  const kept = startLoad({ ...common, concurrency: keepAliveClients, keepAlive: true })
  try {
    for (let roll = 1; roll <= rolls; roll++) {
      example.child.kill('SIGUSR2')
      // A roll replaces the workers one after the other, each started and warmed on a busy machine.
      await example.waitFor((line) => line.msg === 'rolling restart finished', roll, ROLL_TIMEOUT_MILLIS)
    }
    // The rest of the time is load with recycles only: a fixed duration, not a wait for an event.
    const left = seconds * 1000 - (performance.now() - started)
    if (left > 0) await delay(left)
  } finally {
    fresh.stop()
    kept.stop()
  }
  const outcomes = [...await fresh.done, ...await kept.done]
  // Every client has its answer or gave up: nothing may be left in the primary's hands.
  const held = await heldConnections(primaryPid, example.port)
  const retired = example.logged('worker exited').length
  example.child.kill('SIGTERM')
  const exit = await example.exited
  const failed = failures(outcomes)
  const perWorker = new Map<number, number>()
  for (const outcome of outcomes) {
    if (outcome.workerPid !== undefined) perWorker.set(outcome.workerPid, (perWorker.get(outcome.workerPid) ?? 0) + 1)
  }
  return {
    policy,
    outcomes,
    failed,
    hung: failed.filter((outcome) => outcome.error === HUNG).length,
    retirements: retired,
    held,
    exit,
    perWorker
  }
}
