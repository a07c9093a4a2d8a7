import Fastify, { type FastifyInstance } from 'fastify'
import knex, { type Knex } from 'knex'
import forkSafeDb from 'fastify-fork-safe-db'
import forkSafeWorker, { type WarmupRequest } from 'fastify-fork-safe-db/worker'
import { readConfig, type AppConfig } from './config'
import { epochNow, type RetireCommand, type WorkerReport } from './messages'

// A worker of the respawn benchmark's app: GET /users/:id (a one-row lookup) and GET /health,
// the pool warmed before listening (the plugin) and the request path warmed by the worker
// helper, or a plain knex opened by the first request (the baseline). It retires when its
// primary says so, through the worker helper's `app.retire()`.

// The example's read routes: a hit, a miss (404) and the health check.
const WARMUP_REQUESTS: WarmupRequest[] = [{ url: '/users/1' }, { url: '/users/1000000' }, { url: '/health' }]
// `users.id` is an INT UNSIGNED.
const MAX_ID = 4_294_967_295
const EXIT_GRACE_MILLIS = 1000

function report (message: WorkerReport): void {
  if (process.connected) process.send?.(message)
}

/** The database side: the plugin (request.db) or a plain knex in a closure. */
async function withDatabase (app: FastifyInstance, config: AppConfig): Promise<{
  db: (request: { db: Knex }) => Knex
  coldAcquires: () => number | null
}> {
  const pool = { min: config.poolMin, max: config.poolMax }
  if (config.pool === 'plugin') {
    await app.register(forkSafeDb, { connection: config.mysqlUrl, warmup: config.warmup, pool })
    return { db: (request) => request.db, coldAcquires: () => app.dbPool.stats().coldAcquires.count }
  }
  const db = knex({ client: 'mysql2', connection: config.mysqlUrl, pool })
  app.addHook('onClose', async () => db.destroy())
  return { db: () => db, coldAcquires: () => null }
}

export async function runWorker (): Promise<void> {
  // Listening from the start: a message that arrives before a listener exists is dropped.
  const asked = new Promise<void>((resolve) => {
    process.on('message', (message: RetireCommand) => { if (message?.type === 'retire') resolve() })
  })
  const config = readConfig()
  const app = Fastify({ return503OnClosing: false, forceCloseConnections: false })
  const { db, coldAcquires } = await withDatabase(app, config)
  const warmup = config.pool === 'plugin' && config.warmupRounds > 0
    ? { requests: WARMUP_REQUESTS, rounds: config.warmupRounds }
    : undefined
  await app.register(forkSafeWorker, { warmup })

  const served: Array<[number, number]> = []
  app.addHook('onSend', async (_request, reply) => { reply.header('x-worker-pid', String(process.pid)) })
  app.addHook('onResponse', async (request, reply) => {
    if (request.isWarmup) return
    served.push([epochNow(), reply.elapsedTime])
    if (served.length === config.maxRequests) report({ type: 'recycle' })
  })
  // The worker's record goes to the primary as the app closes: the pool's count is final then.
  app.addHook('onClose', async () => report({ type: 'closing', served, coldAcquires: coldAcquires() }))

  app.get<{ Params: { id: number } }>('/users/:id', {
    schema: {
      params: { type: 'object', properties: { id: { type: 'integer', minimum: 1, maximum: MAX_ID } }, required: ['id'] }
    }
  }, async (request, reply) => {
    const user = await db(request)('users').select('id', 'name', 'email').where({ id: request.params.id }).first()
    return user ?? reply.code(404).send({ error: 'Not Found' })
  })
  app.get('/health', async () => ({ status: 'ok', pid: process.pid }))

  await app.listen({ port: config.port, host: '127.0.0.1' })
  report({ type: 'listening', at: epochNow(), cpuMillis: cpuMillis() })
  await asked
  await app.retire('asked by the primary')
  // Every step of retire() is bounded; should anything else hold the process, leave all the same.
  setTimeout(() => process.exit(), EXIT_GRACE_MILLIS).unref()
}

function cpuMillis (): number {
  const { user, system } = process.cpuUsage()
  return (user + system) / 1000
}
