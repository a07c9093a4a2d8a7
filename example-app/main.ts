import cluster from 'node:cluster'
import pino from 'pino'
import { readConfig } from './config'
import { describeDatabase, startDatabase } from './database'
import { prepareSchema } from './schema'
import { Supervisor } from './supervisor'
import { runWorker } from './worker'

// `npm run example`: a Fastify users API under node:cluster, on fastify-fork-safe-db.
// SIGHUP: rolling restart. SIGTERM / SIGINT (Ctrl-C): drain every worker, then exit 0.

async function runPrimary (): Promise<void> {
  const log = pino({ name: 'primary' })
  const config = readConfig()
  const database = await startDatabase(log)
  // The schema is prepared on a connection that is closed before the first fork.
  await prepareSchema(database.url)

  const supervisor = new Supervisor({
    workers: config.workers,
    log,
    env: { MYSQL_URL: database.url, PORT: String(config.port), HOST: config.host }
  })

  let stopping: Promise<void> | undefined
  const stop = (signal: string) => {
    stopping ??= (async () => {
      log.info({ signal }, 'shutting down: draining every worker')
      await supervisor.shutdown()
      await database.release()
      log.info('all workers exited; bye')
    })().catch((error: unknown) => {
      log.error({ err: error }, 'shutdown failed')
      process.exitCode = 1
    })
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGHUP', () => {
    if (stopping !== undefined) return
    supervisor.rollingRestart().catch((error: unknown) => log.error({ err: error }, 'rolling restart failed'))
  })

  await supervisor.start()
  log.info({
    workers: config.workers,
    maxRequests: config.maxRequests,
    database: describeDatabase(database.url),
    url: `http://${config.host}:${config.port}`
  }, 'all workers listening')
}

if (cluster.isPrimary) {
  runPrimary().catch((error: unknown) => {
    pino({ name: 'primary' }).fatal({ err: error }, 'could not start')
    process.exit(1)
  })
} else {
  runWorker().catch((error: unknown) => {
    // Typically ready() rejecting with FST_FORK_SAFE_DB_WARMUP_FAILED: the primary respawns us with backoff.
    pino({ name: 'worker' }).fatal({ err: error }, 'worker could not start')
    process.exit(1)
  })
}
