import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import type { SocketTracker } from './drain-sockets'
import { leaveCluster, type Disconnection } from './leave-cluster'
import type { ResolvedWorkerOptions } from './options'
import { stopAccepting } from './stop-accepting'

// Retiring a worker, every step bounded:
// 1. stop accepting (the primary, if any, stops handing this worker connections);
// 2. drain: responses carry `Connection: close` (see the plugin's onSend hook); wait up to
//    drainMillis for clients to hang up, then close the sockets that carry no request: idle
//    between requests, or never sent one (see drain-sockets.ts);
// 3. close Fastify: in-flight requests end, then onClose hooks run (fastify-fork-safe-db
//    destroys its pool); after closeMillis every socket left is destroyed so close can finish;
// 4. leave the cluster only once the primary has confirmed that no handoff is on its way.

export interface RetireReport {
  reason: string
  /** Connections open when the worker stopped accepting. */
  openAtStart: number
  /** Connections still open after drainMillis: the ones that carry no request are closed then. */
  openAfterDrain: number
  /** Of those, connections on which the client had sent nothing at all. */
  closedUnused: number
  /** Connections destroyed at closeMillis because a request had not ended. */
  destroyed: number
  /** True when fastify.close() had not finished within closeMillis (plus a last drainMillis). */
  closeTimedOut: boolean
  disconnection: Disconnection
  /** From the retire call to the end of the last step. */
  millis: number
}

function bounded<T> (work: Promise<T>, millis: number): Promise<{ done: true, value: T } | { done: false }> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<{ done: false }>((resolve) => { timer = setTimeout(() => resolve({ done: false }), millis) })
  return Promise.race([work.then((value) => ({ done: true as const, value })), timeout]).finally(() => clearTimeout(timer))
}

export async function retire (
  app: FastifyInstance, sockets: SocketTracker, options: ResolvedWorkerOptions, reason: string, log: FastifyBaseLogger
): Promise<RetireReport> {
  const started = performance.now()
  stopAccepting(app.server)
  const openAtStart = sockets.size
  log.info({ reason, openConnections: openAtStart }, 'worker retiring: stopped accepting')

  let openAfterDrain = 0
  let closedUnused = 0
  if (!await sockets.closed(options.drainMillis)) {
    openAfterDrain = sockets.size
    // Kept-alive sockets between requests: Node (>= 18.2) knows which those are.
    app.server.closeIdleConnections()
    // Sockets whose client never sent a byte, which Node does not count as idle.
    closedUnused = sockets.closeUnused()
    if (closedUnused > 0) log.info({ closedUnused }, 'worker retiring: closed connections on which no request was sent within drainMillis')
  }

  // Fastify waits for requests in flight before its onClose hooks; one that never ends would
  // hold close() for ever, so at closeMillis its socket is destroyed, and close() is given one
  // more drainMillis to run the hooks.
  // A failing onClose hook must not keep the worker in the cluster: it is logged, and the retire goes on.
  const closing = app.close().then(() => true, (error: unknown) => {
    log.error({ err: error }, 'worker retiring: fastify.close() failed')
    return false
  })
  let closed = await bounded(closing, options.closeMillis)
  let destroyed = 0
  if (!closed.done) {
    destroyed = sockets.destroyAll()
    log.warn({ destroyed }, 'worker retiring: requests still running at closeMillis; their connections were destroyed')
    closed = await bounded(closing, options.drainMillis)
  }
  const closeTimedOut = !closed.done
  if (closeTimedOut) log.error('worker retiring: fastify.close() did not finish in time; leaving without it')

  const disconnection = await leaveCluster(options.disconnectMillis)
  if (disconnection === 'timed-out') log.error('worker retiring: the cluster primary did not answer in time; channel closed without its confirmation')
  const report: RetireReport = { reason, openAtStart, openAfterDrain, closedUnused, destroyed, closeTimedOut, disconnection, millis: Math.round(performance.now() - started) }
  log.info(report, 'worker retired')
  return report
}
