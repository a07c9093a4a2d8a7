import Fastify, { type FastifyInstance } from 'fastify'
import forkSafeDb, { type ForkSafeDbStats } from 'fastify-fork-safe-db'
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
  /** Workers the primary runs; the pool's budget counts one more for the overlap of a recycle. */
  workers: number
  /** Called once, when the worker has sent `maxRequests` responses (0: never). */
  maxRequests: number
  onMaxRequests: () => void
}

interface UserParams { id: string }
interface NewUser { name: string, email: string }

/** The worker's HTTP app: a small users API on the fork-safe pool. */
export async function buildServer (options: ServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    logger: { level: process.env.LOG_LEVEL ?? 'info' },
    // While a worker drains, requests on its kept-alive connections are still served (with
    // `Connection: close`) instead of getting 503s; new connections go to other workers.
    return503OnClosing: false,
    // Idle keep-alive sockets are closed by the drain, not at once by close() (see drain.ts).
    forceCloseConnections: false
  })
  // The budget caps pool.max so that every worker, plus the replacement a recycle or rolling
  // restart starts before its predecessor stops, fits within the server's max_connections.
  await app.register(forkSafeDb, { connection: options.mysqlUrl, warmup: options.warmup, pool: options.pool, budget: { workers: options.workers + 1 } })

  let responses = 0
  app.addHook('onSend', async (_request, reply) => {
    reply.header('x-worker-pid', String(process.pid))
  })
  app.addHook('onResponse', async () => {
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
    const [id] = await request.db('users').insert({ name: request.body.name, email: request.body.email })
    return reply.code(201).send({ id })
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
