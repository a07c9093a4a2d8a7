import { prepareDrain } from './drain'
import { buildServer } from './server'
import { readConfig } from './config'
import type { PrimaryMessage, WorkerMessage } from './messages'

// A cluster worker: warm the pool, then listen; drain and exit when the primary (recycling,
// rolling restart, shutdown) or a signal (Ctrl-C reaches the whole process group) says so.

const EXIT_DEADLINE_MILLIS = 30_000

function send (message: WorkerMessage): void {
  if (process.connected) process.send?.(message)
}

/**
 * Resolves with the reason the worker must stop. Listens from the very start: a message that
 * arrives before a listener exists is dropped, and the primary does not send twice.
 */
function stopRequested (): Promise<string> {
  return new Promise((resolve) => {
    process.on('message', (message: PrimaryMessage) => {
      if (message?.type === 'retire') resolve('asked by the primary')
    })
    process.once('SIGTERM', () => resolve('SIGTERM'))
    process.once('SIGINT', () => resolve('SIGINT'))
  })
}

export async function runWorker (): Promise<void> {
  const stop = stopRequested()
  const config = readConfig()
  const mysqlUrl = config.mysqlUrl
  if (mysqlUrl === undefined) throw new Error('the primary must pass MYSQL_URL to its workers')

  const app = await buildServer({
    mysqlUrl,
    warmup: config.warmup,
    pool: { min: config.poolMin, max: config.poolMax },
    workers: config.workers,
    maxRequests: config.maxRequests,
    onMaxRequests: () => send({ type: 'recycle' })
  })
  const drain = prepareDrain(app)
  // listen() runs ready() first, and ready() resolves only once the pool is warm. A stop asked
  // for meanwhile waits for it, so the drain always starts from a listening server.
  await app.listen({ port: config.port, host: config.host })

  const reason = await stop
  app.log.info({ reason }, 'worker draining')
  // If draining ever hangs, leave anyway: the primary replaces us and the server drops our sockets.
  setTimeout(() => {
    app.log.error('worker did not drain in time; exiting')
    process.exit(1)
  }, EXIT_DEADLINE_MILLIS).unref()
  await drain()
  const { coldAcquires } = app.dbPool.stats()
  app.log.info({ coldAcquires }, 'worker drained')
  // The primary logs it: a worker's counts die with it, and the respawn benchmark sums them.
  send({ type: 'drained', coldAcquires: coldAcquires.count, coldWaitMillis: coldAcquires.totalWaitMillis })
  // Disconnecting the IPC channel lets the process exit on its own once nothing is left.
  if (process.connected) process.disconnect()
}
