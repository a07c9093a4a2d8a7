import pino from 'pino'
import { buildServer } from './server'
import { config } from './config'

// A worker: under the example's primary (main.ts) or pm2's (ecosystem.config.js). listen()
// runs ready() first: the pool is warm and the request path warmed before the port is shared.
// The worker helper tells the example's primary it listens, and retires the worker (drained,
// pool closed) when that primary asks or on SIGINT/SIGTERM (pm2 stops instances with SIGINT).

async function main (): Promise<void> {
  const app = await buildServer()
  await app.listen({ port: config.port, host: config.host })
  // pm2's wait_ready; the example's primary ignores it.
  process.send?.('ready')
}

main().catch((error: unknown) => {
  // Typically ready() rejecting with FST_FORK_SAFE_DB_WARMUP_FAILED: the primary respawns it, with backoff.
  pino({ name: 'worker' }).fatal({ err: error }, 'worker could not start')
  process.exit(1)
})
