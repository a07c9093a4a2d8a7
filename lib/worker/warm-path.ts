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
// 127.0.0.1, with Fastify's own request handler, half of them on a fresh connection each and
// half on a kept-alive one, as clients will.

// The sockets of every warm-up listener in this process, so a request can be told apart.
const warmSockets = new WeakSet<object>()

/**
 * True for a request sent by the warm-up. Takes Node's request (`request.raw`), so it also
 * fits Fastify's `disableRequestLogging` option: `Fastify({ disableRequestLogging: isWarmupRequest })`.
 */
export function isWarmupRequest (req: { socket?: object | null }): boolean {
  return req.socket != null && warmSockets.has(req.socket)
}

export interface WarmupReport {
  requests: number
  failed: number
  /** Latency of the first and of the last round, summed over the requests of a round. */
  firstRoundMillis: number
  lastRoundMillis: number
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
export async function warmRequestPath (
  app: FastifyInstance, requests: readonly WarmupRequest[], rounds: number, log: FastifyBaseLogger
): Promise<WarmupReport> {
  const server = createServer((req, res) => app.routing(req, res))
  server.on('connection', (socket: Socket) => warmSockets.add(socket))
  const port = await listen(server)
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const report: WarmupReport = { requests: 0, failed: 0, firstRoundMillis: 0, lastRoundMillis: 0 }
  try {
    for (let round = 0; round < rounds; round++) {
      const started = performance.now()
      for (const target of requests) {
        const status = await send(port, target, round % 2 === 0 ? false : agent)
        report.requests += 1
        if (status === 0 || status >= 500) report.failed += 1
      }
      const millis = performance.now() - started
      if (round === 0) report.firstRoundMillis = millis
      report.lastRoundMillis = millis
    }
  } finally {
    agent.destroy()
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
  report.firstRoundMillis = Math.round(report.firstRoundMillis * 10) / 10
  report.lastRoundMillis = Math.round(report.lastRoundMillis * 10) / 10
  if (report.failed > 0) log.warn(report, 'request-path warm-up: some warm-up requests failed (5xx or no answer)')
  else log.info(report, 'request path warmed')
  return report
}
