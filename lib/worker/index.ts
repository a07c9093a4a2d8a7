import cluster from 'node:cluster'
import type { FastifyPluginAsync } from 'fastify'
import fp from 'fastify-plugin'
import { SocketTracker } from './drain-sockets'
import { linkToPrimary } from './primary-link'
import { resolveWorkerOptions, type ForkSafeWorkerOptions } from './options'
import { retire, type RetireReport } from './retire'
import { isWarmupRequest, warmRequestPath } from './warm-path'

// `fastify-fork-safe-db/worker`: retire a Fastify server process (a node:cluster or pm2 worker,
// or a plain process) without losing a connection, and warm its request path before it is
// exposed. Independent of the database plugin; register it after it, so that its warm-up runs
// on a warm pool and its retire closes the pool last.

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Stops accepting, drains open connections (`Connection: close`), closes Fastify (and so
     * the pool) and leaves the cluster once the primary can hand over no more connections.
     * Every step is bounded. Idempotent: later calls return the first call's promise.
     */
    retire: (reason?: string) => Promise<RetireReport>
  }
  interface FastifyRequest {
    /** True for the requests the warm-up sends before the app is exposed. */
    isWarmup: boolean
  }
}

const PLUGIN_NAME = 'fastify-fork-safe-db/worker'
/** After a signal-driven retire, the process is given this long to exit on its own. */
const EXIT_GRACE_MILLIS = 1000

const forkSafeWorkerPlugin: FastifyPluginAsync<ForkSafeWorkerOptions> = async (fastify, rawOptions) => {
  const options = resolveWorkerOptions(rawOptions, cluster.isWorker)
  const log = fastify.log.child({ plugin: PLUGIN_NAME })
  const sockets = new SocketTracker(fastify.server)
  let retiring: Promise<RetireReport> | undefined

  fastify.decorate('retire', (reason = 'asked') => {
    // The signal handlers stay until the retire is over: a second Ctrl-C or a SIGHUP during the
    // drain must not kill the process half way.
    retiring ??= retire(fastify, sockets, options, reason, log).finally(removeSignalHandlers)
    return retiring
  })
  fastify.decorateRequest('isWarmup', { getter () { return isWarmupRequest(this.raw) } })
  // From the moment the worker retires, every response tells its client to close the connection.
  fastify.addHook('onSend', (_request, reply, _payload, done) => {
    if (retiring !== undefined) reply.header('connection', 'close')
    done()
  })

  if (options.warmup.requests.length > 0) {
    // onReady runs once every plugin is loaded and before listen() binds: routes are complete,
    // and a database plugin registered earlier has warmed its pool.
    fastify.addHook('onReady', async () => {
      await warmRequestPath(fastify, options.warmup, log)
    })
  }

  const retireAndExit = (reason: string) => {
    fastify.retire(reason).then((report) => {
      process.exitCode = report.closeTimedOut || report.disconnection === 'timed-out' ? 1 : 0
    }, (error: unknown) => {
      log.error({ err: error }, 'worker retire failed')
      process.exitCode = 1
    }).finally(() => {
      // Leave even if something else (a timer, a socket of another library) holds the loop.
      setTimeout(() => process.exit(), EXIT_GRACE_MILLIS).unref()
    })
  }
  const onSignal = (signal: NodeJS.Signals) => retireAndExit(signal)
  // Under fastify-fork-safe-db/cluster's primary: tell it once listening, retire when it asks.
  const unlink = linkToPrimary(fastify, () => retireAndExit('asked by the cluster primary'))
  const onIgnored = (signal: NodeJS.Signals) => {
    log.info({ signal }, `${signal} ignored by this worker: its cluster primary acts on it`)
  }
  function removeSignalHandlers (): void {
    for (const signal of options.signals) process.off(signal, onSignal)
    for (const signal of options.ignoreSignals) process.off(signal, onIgnored)
    unlink()
  }
  for (const signal of options.signals) process.on(signal, onSignal)
  for (const signal of options.ignoreSignals) process.on(signal, onIgnored)
  // Closed without a retire (a test, or an app that closes itself): leave no listener behind.
  fastify.addHook('onClose', async () => { if (retiring === undefined) removeSignalHandlers() })
}

/** The worker helper: `fastify.register(forkSafeWorker, { drainMillis, warmup })`, then `fastify.retire()`. */
export const forkSafeWorker = fp(forkSafeWorkerPlugin, { fastify: '5.x', name: PLUGIN_NAME })
export default forkSafeWorker

export type { ForkSafeWorkerOptions, WarmupRequest } from './options'
export type { RetireReport } from './retire'
export type { Disconnection } from './leave-cluster'
export type { WarmupReport } from './warm-path'
export { isWarmupRequest }

// `require('fastify-fork-safe-db/worker')` returns the plugin itself, like the main entry, with
// the named exports attached.
module.exports = Object.assign(forkSafeWorker, { default: forkSafeWorker, forkSafeWorker, isWarmupRequest })
