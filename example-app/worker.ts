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

export async function runWorker (): Promise<void> {
  const config = readConfig()
  const mysqlUrl = config.mysqlUrl
  if (mysqlUrl === undefined) throw new Error('the primary must pass MYSQL_URL to its workers')

  const app = await buildServer({
    mysqlUrl,
    warmup: config.warmup,
    pool: { min: config.poolMin, max: config.poolMax },
    maxRequests: config.maxRequests,
    onMaxRequests: () => send({ type: 'recycle' })
  })
  const drain = prepareDrain(app)

  const retire = (reason: string) => {
    app.log.info({ reason }, 'worker draining')
    // If draining ever hangs, leave anyway: the primary replaces us and the server drops our sockets.
    setTimeout(() => {
      app.log.error('worker did not drain in time; exiting')
      process.exit(1)
    }, EXIT_DEADLINE_MILLIS).unref()
    drain().then(() => {
      app.log.info('worker drained')
      // Disconnecting the IPC channel lets the process exit on its own once nothing is left.
      if (process.connected) process.disconnect()
    }, (error: unknown) => {
      app.log.error({ err: error }, 'worker failed to drain')
      process.exit(1)
    })
  }
  process.on('message', (message: PrimaryMessage) => {
    if (message?.type === 'retire') retire('asked by the primary')
  })
  process.once('SIGTERM', () => retire('SIGTERM'))
  process.once('SIGINT', () => retire('SIGINT'))

  // listen() runs ready() first, and ready() resolves only once the pool is warm.
  await app.listen({ port: config.port, host: config.host })
}
