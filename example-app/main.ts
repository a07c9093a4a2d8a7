// First: Node 22's compile cache must be on before the dependencies load.
import './compile-cache'
import cluster from 'node:cluster'
import pino from 'pino'
import { budgetTable } from './budget-table'
import { readConfig } from './config'
import { describeDatabase, startDatabase, type ExampleDatabase } from './database'
import { onTerminal, primaryLogger } from './logging'
import { watchNpmParent } from './parent-watch'
import { chooseSchedulingPolicy } from './scheduling'
import { prepareSchema } from './schema'
import { StartUpPriority } from './start-up-priority'
import { Supervisor } from './supervisor'
import { runWorker } from './worker'

// `npm run example`: a Fastify users API under node:cluster, on fastify-fork-safe-db.
// SIGHUP to the primary's pid (logged at start): rolling restart. SIGTERM / SIGINT (Ctrl-C):
// drain every worker, then exit 0. Workers ignore a SIGHUP of their own: a closing terminal
// sends it to the whole process group, and the primary's rolling restart replaces them drained.

async function runPrimary (): Promise<void> {
  const log = primaryLogger()
  const config = readConfig()
  log.info({ pid: process.pid, schedulingPolicy: chooseSchedulingPolicy() },
    `primary started: \`kill -HUP ${process.pid}\` rolls the workers, \`kill -TERM ${process.pid}\` (or Ctrl-C) stops them`)
  // Filled in as start-up proceeds; the signal handlers below may run at any point of it.
  const running: { database?: ExampleDatabase, supervisor?: Supervisor } = {}

  // Signals are handled from the first moment, so a Ctrl-C during start-up still removes a
  // private database and never leaves workers behind.
  let stopping: Promise<void> | undefined
  const stop = (signal: string) => {
    stopping ??= (async () => {
      log.info({ signal }, 'shutting down: draining every worker')
      stopWatching()
      await running.supervisor?.shutdown()
      await running.database?.release()
      log.info('all workers exited; bye')
    })().catch((error: unknown) => {
      log.error({ err: error }, 'shutdown failed')
      process.exitCode = 1
    })
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  const stopWatching = watchNpmParent((parentPid) => {
    log.warn({ parentPid }, 'npm, which started this primary, has exited (a SIGHUP meant for the primary?): shutting down')
    stop('parent exited')
  })
  process.on('SIGHUP', () => {
    if (stopping !== undefined || running.supervisor === undefined) return
    running.supervisor.rollingRestart().catch((error: unknown) => log.error({ err: error }, 'rolling restart failed'))
  })

  let database: ExampleDatabase | undefined
  try {
    database = await startDatabase(log)
    running.database = database
    // The schema is prepared on a connection that is closed before the first fork.
    await prepareSchema(database.url)
    // A small table for humans: on a terminal as a table, in a log pipeline as one line.
    const table = await budgetTable(database.url, config)
    if (onTerminal()) process.stdout.write(`\n${table}\n\n`)
    else log.info(`\n${table}`)
  } catch (error) {
    await database?.release()
    throw error
  }
  if (stopping !== undefined) {
    // A signal arrived while the database was being prepared: nothing to drain, but the
    // database may have come up after the signal was handled (release() is idempotent).
    await stopping
    await database.release()
    return
  }
  const supervisor = new Supervisor({
    workers: config.workers,
    log,
    env: { MYSQL_URL: database.url, PORT: String(config.port), HOST: config.host, WORKERS: String(config.workers) },
    // STARTUP_NICE=0 turns it off: then nothing reads /proc or touches a priority.
    startUpPriority: config.startUpNice > 0 ? new StartUpPriority(config.startUpNice) : undefined
  })
  running.supervisor = supervisor
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
    // Synchronous (no pretty transport): the process exits on the next line.
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
