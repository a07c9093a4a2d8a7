import { buildServer } from './server'
import { readConfig } from './config'

// The example's users API under pm2's cluster mode (example-app/ecosystem.config.js): pm2's
// daemon is the cluster primary, so this is a worker and nothing else. It warms its pool and
// its request path, listens, then tells pm2 it is ready (`wait_ready`). pm2 stops an instance
// (reload, scale down, delete) with SIGINT, on which fastify-fork-safe-db/worker retires it:
// drained, pool closed, and off the cluster only once pm2's primary can hand it no connection.

// pm2 reloads instances two at a time (PM2_CONCURRENT_ACTIONS, 2 by default): while it does,
// two replacements run next to the instances they replace.
const PM2_CONCURRENT_ACTIONS = Number(process.env.PM2_CONCURRENT_ACTIONS ?? 2)

async function main (): Promise<void> {
  const config = readConfig()
  if (config.mysqlUrl === undefined) throw new Error('set MYSQL_URL for the pm2 app')
  const app = await buildServer({
    mysqlUrl: config.mysqlUrl,
    warmup: config.warmup,
    pool: { min: config.poolMin, max: config.poolMax },
    workers: config.workers,
    overlap: PM2_CONCURRENT_ACTIONS,
    maxRequests: 0,
    onMaxRequests: () => {},
    onClosing: () => {},
    warmupRounds: config.warmupRounds
  })
  await app.listen({ port: config.port, host: config.host })
  process.send?.('ready')
}

main().catch((error: unknown) => {
  process.stderr.write(`pm2 worker could not start: ${String((error as Error)?.stack ?? error)}\n`)
  process.exit(1)
})
