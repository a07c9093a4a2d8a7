import Fastify, { LogController, type FastifyInstance } from 'fastify'
import type { Knex } from 'knex'
import forkSafeDb, { type ForkSafeDbStats } from 'fastify-fork-safe-db'
import forkSafeWorker, { isWarmupRequest, type WarmupRequest } from 'fastify-fork-safe-db/worker'
import type { WorkerStats } from './messages'
import { workerStatsChannel } from './stats-ipc'

function openConnections (pool: unknown): number {
  const { connections } = pool as ForkSafeDbStats
  return connections.used + connections.free
}

export interface ServerOptions {
  mysqlUrl: string
  warmup: boolean
  pool: { min: number, max: number }
  /** Workers the primary runs. */
  workers: number
  /** Replacements that can run next to them: 1 for the example's primary (one at a time), 2 under pm2 reload. */
  overlap: number
  /** Called once, when the worker has sent `maxRequests` responses (0: never). */
  maxRequests: number
  onMaxRequests: () => void
  /** Called as the worker closes (retiring), with its pool's cold-acquire counts. */
  onClosing: (coldAcquires: ForkSafeDbStats['coldAcquires']) => void
  /** Rounds of warm-up requests per route before listening; 0 skips the request-path warm-up. */
  warmupRounds: number
}

// Before a worker listens, real HTTP requests to every route: reads, a 404, a validation
// error, and a write whose transaction is rolled back (see POST /users).
const WARMUP_REQUESTS: WarmupRequest[] = [
  { url: '/users/1' },
  { url: '/users/1000000' },
  { method: 'POST', url: '/users', body: { name: 'warm-up', email: 'warm-up@example.com' } },
  { method: 'POST', url: '/users', body: { name: '' } },
  { url: '/health' },
  { url: '/stats' }
]

interface UserParams { id: string }
interface NewUser { name: string, email: string }

/** The worker's HTTP app: a small users API on the fork-safe pool. */
export async function buildServer (options: ServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: { level: process.env.LOG_LEVEL ?? 'info' },
    // The warm-up's requests (over a hundred per worker start) stay out of the request log.
    logController: new LogController({ disableRequestLogging: isWarmupRequest }),
    // While a worker drains, requests on its kept-alive connections are still served (with
    // `Connection: close`) instead of getting 503s; new connections go to other workers.
    return503OnClosing: false,
    // Idle keep-alive sockets are closed by the worker helper's drain, not at once by close().
    forceCloseConnections: false
  })
  // The budget caps pool.max so that every worker, plus the replacements a recycle or rolling
  // restart starts before their predecessors stop, fits within the server's max_connections.
  await app.register(forkSafeDb, { connection: options.mysqlUrl, warmup: options.warmup, pool: options.pool, budget: { workers: options.workers + options.overlap } })
  // After the database plugin: the request-path warm-up runs on a warm pool, and a retire
  // closes the pool last. SIGTERM/SIGINT retire the worker; SIGHUP is the primary's to act on.
  await app.register(forkSafeWorker, { warmup: options.warmupRounds > 0 ? { requests: WARMUP_REQUESTS, rounds: options.warmupRounds } : undefined })
  app.addHook('onClose', async () => options.onClosing(app.dbPool.stats().coldAcquires))

  let responses = 0
  app.addHook('onSend', async (_request, reply) => {
    reply.header('x-worker-pid', String(process.pid))
  })
  app.addHook('onResponse', async (request) => {
    if (request.isWarmup) return
    responses += 1
    if (responses === options.maxRequests) options.onMaxRequests()
  })

  app.get<{ Params: UserParams }>('/users/:id', {
    schema: { params: { type: 'object', properties: { id: { type: 'integer', minimum: 1 } }, required: ['id'] } }
  }, async (request, reply) => {
    const user = await request.db('users').select('id', 'name', 'email').where({ id: request.params.id }).first()
    if (user === undefined) return reply.code(404).send({ error: 'Not Found', message: `no user ${request.params.id}` })
    return user
  })

  app.post<{ Body: NewUser }>('/users', {
    schema: {
      body: {
        type: 'object',
        properties: { name: { type: 'string', minLength: 1, maxLength: 100 }, email: { type: 'string', minLength: 3, maxLength: 200 } },
        required: ['name', 'email'],
        additionalProperties: false
      }
    }
  }, async (request, reply) => {
    const insert = (db: Knex) => db('users').insert({ name: request.body.name, email: request.body.email })
    if (!request.isWarmup) {
      const [id] = await insert(request.db)
      return reply.code(201).send({ id })
    }
    // Warm-up: the same statement, in a transaction that is rolled back.
    const trx = await request.db.transaction()
    try {
      const [id] = await insert(trx)
      return await reply.code(201).send({ id })
    } finally {
      await trx.rollback()
    }
  })

  // Readiness: one borrow and ping within a short deadline (dbPool.check() never throws).
  app.get('/health', async (_request, reply) => {
    const healthy = await app.dbPool.check()
    return reply.code(healthy ? 200 : 503).send({ status: healthy ? 'ok' : 'unavailable', pid: process.pid })
  })

  const ownStats = (): WorkerStats => ({ pid: process.pid, responses, pool: app.dbPool.stats() })
  const channel = workerStatsChannel(ownStats)
  // `?all=1`: every worker's stats, collected by the primary over IPC.
  app.get<{ Querystring: { all?: string } }>('/stats', async (request) => {
    if (request.query.all !== '1') return ownStats()
    const workers = await channel.allStats()
    return { workers, connections: workers.reduce((sum, worker) => sum + openConnections(worker.pool), 0) }
  })

  return app
}
