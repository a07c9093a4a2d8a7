import cluster, { type Worker } from 'node:cluster'
import { once } from 'node:events'
import http from 'node:http'
import type { Logger } from 'pino'
import { renderPrometheus, type WorkerMetrics } from './prometheus-text'
import type { MetricsAnswer, MetricsRequest } from './worker-metrics'

// GET /metrics in the primary: every worker's metrics in one Prometheus scrape. Each scrape asks
// every worker over IPC at once and waits for them at most `timeoutMillis`; a worker that has not
// answered by then (stopped, stuck in a long synchronous task, leaving) is left out and counted,
// and the others are served. The scrape never fails because of one worker, and it answers well
// within Prometheus' scrape timeout (10 s by default).
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
  let scrapes = 0
  const server = http.createServer((request, response) => {
    if (request.method !== 'GET' || request.url?.split('?')[0] !== '/metrics') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('GET /metrics\n')
      return
    }
    scrape(++scrapes, options.timeoutMillis, log).then((text) => {
      response.writeHead(200, { 'content-type': CONTENT_TYPE }).end(text)
    }, (error: unknown) => {
      log.error({ err: error }, 'metrics scrape failed')
      response.writeHead(500, { 'content-type': 'text/plain' }).end('scrape failed\n')
    })
  })
  server.listen(options.port, options.host)
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([error]) => { throw error })])
  return server
}

/** Asks every connected worker at once; renders those that answered within the bound. */
async function scrape (id: number, timeoutMillis: number, log: Logger): Promise<string> {
  const workers = Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker?.isConnected() === true)
  const answers = await Promise.all(workers.map((worker) => ask(worker, id, timeoutMillis)))
  const answered = answers.filter((answer): answer is WorkerMetrics => answer !== undefined)
  const missing = workers.filter((_worker, index) => answers[index] === undefined).map((worker) => worker.process.pid)
  if (missing.length > 0) log.warn({ missing, timeoutMillis }, 'metrics: left out workers that did not answer in time')
  return renderPrometheus(answered, missing.length)
}

/** The worker's answer to request `id`; undefined once `timeoutMillis` pass, or if it leaves first. */
function ask (worker: Worker, id: number, timeoutMillis: number): Promise<WorkerMetrics | undefined> {
  return new Promise((resolve) => {
    const settle = (answer: WorkerMetrics | undefined) => {
      clearTimeout(timer)
      worker.off('message', onMessage)
      worker.off('disconnect', onGone)
      resolve(answer)
    }
    const onMessage = (message: unknown) => {
      // The cluster protocol's messages come on the same channel.
      const answer = message as Partial<MetricsAnswer> | null
      if (answer?.type === 'example:metrics' && answer.id === id) settle({ resource: answer.resource ?? {}, scopeMetrics: answer.scopeMetrics ?? [] })
    }
    const onGone = () => settle(undefined)
    const timer = setTimeout(onGone, timeoutMillis)
    worker.on('message', onMessage)
    worker.on('disconnect', onGone)
    const request: MetricsRequest = { type: 'example:metrics', id }
    // A channel that closes meanwhile is reported to the callback, not thrown.
    worker.send(request, undefined, (error: Error | null) => { if (error !== null) onGone() })
  })
}
