import cluster, { type Worker } from 'node:cluster'
import http from 'node:http'
import type { Logger } from 'pino'
import { renderPrometheus, type WorkerMetrics } from './prometheus-text'
import type { MetricsAnswer, MetricsRequest, MetricsState } from './worker-metrics'

// GET /metrics in the primary: every worker's metrics in one Prometheus scrape. Each scrape asks
// every worker that answers requests over IPC at once and waits for them at most
// `timeoutMillis`; a worker that has not answered by then (stopped, stuck in a long synchronous
// task, dead) is left out and counted missing, and the others are served. Workers that said they
// do not answer (yet, or any more) hold no connection: they are counted, starting or leaving,
// without a wait. The scrape never fails because of one worker, and it answers well within
// Prometheus' scrape timeout (10 s by default).
//
// Its own listener, on a loopback address by default, never the app's port: metrics tell anyone
// who reads them how many processes, connections and database hosts there are.

export interface MetricsEndpointOptions {
  host: string
  port: number
  /** How long a scrape waits for the workers. */
  timeoutMillis: number
}

const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

/** Listens on host:port (rejects if it cannot, before any worker starts); close the server to stop. */
export async function startMetricsEndpoint (options: MetricsEndpointOptions, log: Logger): Promise<http.Server> {
  const answers = new Answers()
  let scrapes = 0
  // Scrapes that arrive while one is under way share its answer: the workers are asked once.
  let scraping: Promise<string> | undefined
  const server = http.createServer((request, response) => {
    if (request.method !== 'GET' || request.url?.split('?')[0] !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('GET /metrics\n')
      return
    }
    scraping ??= scrape(answers, ++scrapes, options.timeoutMillis, log).finally(() => { scraping = undefined })
    scraping.then((text) => {
      response.writeHead(200, { 'content-type': CONTENT_TYPE }).end(text)
    }, (error: unknown) => {
      log.error({ err: error }, 'metrics scrape failed')
      response.writeHead(500, { 'content-type': 'text/plain' }).end('scrape failed\n')
    })
  })
  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error) => {
      server.off('listening', onListening)
      reject(error)
    }
    const onListening = () => {
      server.off('error', onError)
      resolve()
    }
    server.once('error', onError).once('listening', onListening)
    server.listen(options.port, options.host)
  })
  // Once listening, an error of the listener is logged: unhandled, it would end the primary.
  server.on('error', (error) => log.error({ err: error }, 'metrics listener error'))
  server.once('close', () => answers.stop())
  return server
}

/** Asks every answering worker at once; renders those that answered within the bound. */
async function scrape (answers: Answers, id: number, timeoutMillis: number, log: Logger): Promise<string> {
  const workers = Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker?.isConnected() === true)
  const results = await Promise.all(workers.map((worker) => {
    const state = answers.stateOf(worker)
    return state === 'answering' ? answers.ask(worker, id, timeoutMillis) : state
  }))
  const metrics = results.filter((result): result is WorkerMetrics => typeof result === 'object')
  const missing = workers.filter((_worker, index) => results[index] === 'missing').map((worker) => worker.process.pid)
  if (missing.length > 0) log.warn({ missing, timeoutMillis }, 'metrics: left out workers that did not answer in time')
  const count = (outcome: Outcome) => results.filter((result) => result === outcome).length
  return renderPrometheus(metrics, { starting: count('starting'), leaving: count('leaving'), missing: missing.length })
}

type Outcome = 'starting' | 'leaving' | 'missing'
type Settle = (result: WorkerMetrics | Outcome) => void

/**
 * The workers' answers and states, through one listener on the cluster for all of them (not one
 * per worker and scrape), each answer routed to the request it answers by worker and request id.
 */
class Answers {
  /** Per request id, per worker id: what settles that worker's ask. */
  readonly #waiting = new Map<number, Map<number, Settle>>()
  /** What each worker said last (worker id): none yet means it is starting. */
  readonly #states = new Map<number, MetricsState['state']>()

  readonly #onMessage = (worker: Worker, message: unknown) => {
    // The cluster protocol's messages come on the same channel.
    const received = message as Partial<MetricsAnswer> | Partial<MetricsState> | null
    if (received?.type === 'example:metrics-state' && (received.state === 'answering' || received.state === 'closed')) {
      this.#states.set(worker.id, received.state)
      // Its pool has closed: the asks it will not answer are settled now, not at the bound.
      if (received.state === 'closed') this.#settleAll(worker, 'leaving')
    } else if (received?.type === 'example:metrics' && typeof received.id === 'number') {
      this.#waiting.get(received.id)?.get(worker.id)?.({ resource: received.resource ?? {}, scopeMetrics: received.scopeMetrics ?? [] })
    }
  }

  /** A worker that disconnects (leaves or dies) answers nothing more. */
  readonly #onGone = (worker: Worker) => {
    this.#states.delete(worker.id)
    this.#settleAll(worker, 'missing')
  }

  #settleAll (worker: Worker, outcome: Outcome): void {
    for (const asks of this.#waiting.values()) asks.get(worker.id)?.(outcome)
  }

  /** Whether the worker answers requests: `starting` until it says it does, `leaving` once its pool has closed. */
  stateOf (worker: Worker): 'answering' | 'starting' | 'leaving' {
    const state = this.#states.get(worker.id)
    return state === undefined ? 'starting' : state === 'closed' ? 'leaving' : 'answering'
  }

  constructor () {
    cluster.on('message', this.#onMessage)
    cluster.on('disconnect', this.#onGone)
  }

  /**
   * The worker's answer to request `id`; `leaving` if its pool closes first; `missing` once
   * `timeoutMillis` pass, or if it disconnects first.
   */
  ask (worker: Worker, id: number, timeoutMillis: number): Promise<WorkerMetrics | Outcome> {
    return new Promise((resolve) => {
      const asks = this.#waiting.get(id) ?? new Map<number, Settle>()
      this.#waiting.set(id, asks)
      const settle: Settle = (result) => {
        clearTimeout(timer)
        asks.delete(worker.id)
        if (asks.size === 0) this.#waiting.delete(id)
        resolve(result)
      }
      const timer = setTimeout(() => settle('missing'), timeoutMillis)
      asks.set(worker.id, settle)
      const request: MetricsRequest = { type: 'example:metrics', id }
      // A channel that closes meanwhile is reported to the callback, not thrown.
      worker.send(request, undefined, (error: Error | null) => { if (error !== null) settle('missing') })
    })
  }

  stop (): void {
    cluster.off('message', this.#onMessage)
    cluster.off('disconnect', this.#onGone)
  }
}
