import { Agent, createServer, request, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { WarmupRequest } from './options'

// A new process's first requests run cold JavaScript: the HTTP parser, Fastify's routing,
// hooks, serializers, the route and the database driver are interpreted until V8 has seen them
// run a few times. A warm pool alone leaves several milliseconds of that on the first real
// request; `inject()` warms the routes but not the socket and HTTP-parser side. So before the
// app is exposed, real HTTP requests are sent to it over a private loopback listener: its own
// socket (`exclusive`, so a cluster worker binds it itself instead of asking the primary) on
// 127.0.0.1, with Fastify's own request handler, every other round on fresh connections and the
// others on kept-alive ones, as clients will. `concurrency` requests are in flight at a time: most
// of a request's time is the database's (one by one, 50 rounds of six requests 15 ms from the
// database took 10 s), but more at once than the pool keeps open would make the warm-up open
// connections. The whole warm-up is bounded by `maxMillis`.

// The sockets of every warm-up listener in this process, so a request can be told apart.
const warmSockets = new WeakSet<object>()

/**
 * True for a request sent by the warm-up. Takes Fastify's request or Node's (both have
 * `socket`), so it fits Fastify's request-logging switch:
 * `Fastify({ logController: new LogController({ disableRequestLogging: isWarmupRequest }) })`.
 */
export function isWarmupRequest (req: { socket?: object | null }): boolean {
  return req.socket != null && warmSockets.has(req.socket)
}

export interface WarmupReport {
  requests: number
  failed: number
  /** True when maxMillis ended the warm-up before its last round. */
  cutShort: boolean
  millis: number
  /** The first and the last request's latency. */
  firstMillis: number
  lastMillis: number
}

function send (port: number, target: WarmupRequest, agent: Agent | false): Promise<number> {
  const payload = target.body === undefined ? undefined : JSON.stringify(target.body)
  const headers: Record<string, string | number> = { ...target.headers }
  if (payload !== undefined) {
    headers['content-type'] ??= 'application/json'
    headers['content-length'] = Buffer.byteLength(payload)
  }
  return new Promise((resolve) => {
    const outgoing = request({ host: '127.0.0.1', port, path: target.url, method: target.method ?? 'GET', headers, agent }, (response) => {
      response.resume()
      response.once('end', () => resolve(response.statusCode ?? 0))
      response.once('error', () => resolve(0))
    })
    outgoing.once('error', () => resolve(0))
    outgoing.end(payload)
  })
}

function listen (server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => {
      server.off('error', reject)
      resolve((server.address() as AddressInfo).port)
    })
  })
}

/** Sends `rounds` rounds of `requests` to `app` over a private listener. */
export interface WarmupPlan { requests: readonly WarmupRequest[], rounds: number, concurrency: number, maxMillis: number }

/** Sends `plan.rounds` rounds of `plan.requests` to `app` over a private listener. */
export async function warmRequestPath (app: FastifyInstance, plan: WarmupPlan, log: FastifyBaseLogger): Promise<WarmupReport> {
  const begun = performance.now()
  const server = createServer((req, res) => app.routing(req, res))
  server.on('connection', (socket: Socket) => warmSockets.add(socket))
  const port = await listen(server)
  const agent = new Agent({ keepAlive: true, maxSockets: plan.concurrency })
  const total = plan.rounds * plan.requests.length
  const report: WarmupReport = { requests: 0, failed: 0, cutShort: false, millis: 0, firstMillis: 0, lastMillis: 0 }
  let next = 0
  const runner = async (): Promise<void> => {
    while (next < total) {
      if (performance.now() - begun >= plan.maxMillis) {
        report.cutShort = true
        return
      }
      const index = next++
      const round = Math.floor(index / plan.requests.length)
      const started = performance.now()
      const status = await send(port, plan.requests[index % plan.requests.length], round % 2 === 0 ? false : agent)
      const millis = Math.round((performance.now() - started) * 10) / 10
      if (report.requests === 0) report.firstMillis = millis
      report.lastMillis = millis
      report.requests += 1
      if (status === 0 || status >= 500) report.failed += 1
    }
  }
  try {
    await Promise.all(Array.from({ length: plan.concurrency }, runner))
  } finally {
    agent.destroy()
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
  report.millis = Math.round(performance.now() - begun)
  if (report.failed > 0) log.warn(report, 'request-path warm-up: some warm-up requests failed (5xx or no answer)')
  else log.info(report, 'request path warmed')
  return report
}
