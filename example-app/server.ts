import Fastify, { type FastifyInstance } from 'fastify'
import forkSafeDb from 'fastify-fork-safe-db'

export interface ServerOptions {
  mysqlUrl: string
  warmup: boolean
  pool: { min: number, max: number }
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
  await app.register(forkSafeDb, { connection: options.mysqlUrl, warmup: options.warmup, pool: options.pool })

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

  app.get('/health', async (request, reply) => {
    try {
      await request.db.raw('SELECT 1')
      return { status: 'ok', pid: process.pid }
    } catch (error) {
      request.log.warn({ err: error }, 'health check failed')
      return reply.code(503).send({ status: 'unavailable', pid: process.pid })
    }
  })

  app.get('/stats', async (request) => {
    const pool = request.db.client.pool
    return {
      pid: process.pid,
      responses,
      pool: {
        min: pool.min,
        max: pool.max,
        used: pool.numUsed(),
        free: pool.numFree(),
        pendingAcquires: pool.numPendingAcquires(),
        pendingCreates: pool.numPendingCreates()
      }
    }
  })

  return app
}
