import { buildServer } from './server'
import { readConfig } from './config'
import type { PrimaryMessage, WorkerMessage } from './messages'

// A cluster worker: warm the pool and the request path, then listen; retire when the primary
// says so (recycling, rolling restart, shutdown) or on SIGTERM/SIGINT (Ctrl-C reaches the whole
// process group). Retiring is fastify-fork-safe-db/worker's `app.retire()`: stop accepting,
// drain, close Fastify and the pool, and close the channel only once the primary confirms that
// no connection is on its way to this worker.

const EXIT_GRACE_MILLIS = 1000

function send (message: WorkerMessage): void {
  if (process.connected) process.send?.(message)
}

/**
 * Resolves once the primary asks this worker to retire. Listens from the very start: a message
 * that arrives before a listener exists is dropped, and the primary does not send twice.
 */
function retireRequested (): Promise<void> {
  return new Promise((resolve) => {
    process.on('message', (message: PrimaryMessage) => {
      if (message?.type === 'retire') resolve()
    })
  })
}

export async function runWorker (): Promise<void> {
  const asked = retireRequested()
  const config = readConfig()
  const mysqlUrl = config.mysqlUrl
  if (mysqlUrl === undefined) throw new Error('the primary must pass MYSQL_URL to its workers')

  const app = await buildServer({
    mysqlUrl,
    warmup: config.warmup,
    pool: { min: config.poolMin, max: config.poolMax },
    workers: config.workers,
    // The primary replaces one worker at a time.
    overlap: 1,
    maxRequests: config.maxRequests,
    onMaxRequests: () => send({ type: 'recycle' }),
    // The primary logs it: a worker's counts die with it, and the respawn benchmark sums them.
    onClosing: (coldAcquires) => send({ type: 'drained', coldAcquires: coldAcquires.count, coldWaitMillis: coldAcquires.totalWaitMillis }),
    warmupRounds: config.warmupRounds
  })
  // listen() runs ready() first: the pool is warm and the request path warmed before the port
  // is shared with the primary. A retire asked for meanwhile waits for it.
  await app.listen({ port: config.port, host: config.host })
  await asked
  const report = await app.retire('asked by the primary')
  // Every step of retire() is bounded, and once it is over nothing of ours holds the process;
  // should anything else, leave all the same.
  setTimeout(() => process.exit(report.closeTimedOut ? 1 : 0), EXIT_GRACE_MILLIS).unref()
}
