import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { startCluster } from 'fastify-fork-safe-db/cluster'
import { config, loggerOptions } from './config'
import { startMetricsEndpoint } from './metrics-endpoint'
import { prepareSchema } from './schema'

// `npm run example`: the users API (server.ts) in WORKERS workers under
// fastify-fork-safe-db/cluster's primary. Its first log line names its pid and what the signals
// do: SIGUSR2 rolls the workers; SIGINT (Ctrl-C), SIGTERM and SIGHUP (a closing terminal) drain
// them all and exit 0. MAX_REQUESTS=N replaces each worker after N responses. Every worker's
// metrics are on http://METRICS_HOST:METRICS_PORT/metrics (127.0.0.1:9464; METRICS_PORT=0: off).

async function main (): Promise<void> {
  const log = pino(loggerOptions('primary'))
  // On a connection closed before the first fork: the primary holds no pool.
  await prepareSchema(config.mysqlUrl)
  // Before the first fork: a port already taken fails the start, not a scrape later.
  const metrics = config.metrics.port === 0 ? undefined : await startMetricsEndpoint(config.metrics, log)
  const workers = startCluster({
    workers: config.workers,
    exec: join(__dirname, 'worker.js'),
    // Node's compile cache (22.1 and later; ignored before): a replacement loads Fastify, knex
    // and mysql2 from code compiled by the workers before it.
    env: { NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE ?? join(tmpdir(), 'node-compile-cache') },
    logger: log
  })
  // npm does not forward SIGHUP: sent to npm's pid alone, it kills npm and would leave this
  // primary running with nobody to stop it. Started by `npm run example`, it stops with npm.
  if (process.env.npm_lifecycle_event === 'example') {
    const npm = process.ppid
    setInterval(() => { if (process.ppid !== npm) workers.close('npm, which started this primary, has exited').catch(() => {}) }, 500).unref()
  }
  const metricsUrl = metrics === undefined ? undefined : `http://${config.metrics.host}:${config.metrics.port}/metrics`
  if (await workers.ready) log.info({ url: `http://${config.host}:${config.port}`, metrics: metricsUrl, database: config.database }, 'serving')
  await workers.closed
  // Scrapes answer until the last worker has gone (each says which workers answered).
  if (metrics !== undefined) await new Promise((resolve) => metrics.close(resolve))
  log.info('all workers exited; bye')
}

main().catch((error: unknown) => {
  // Synchronous (no pretty transport): the process exits on the next line.
  pino({ name: 'primary' }).fatal({ err: error }, 'could not start')
  process.exit(1)
})
