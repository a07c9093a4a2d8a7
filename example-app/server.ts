import createError from '@fastify/error'
import Fastify, { LogController, type FastifyError, type FastifyInstance } from 'fastify'
import type { Knex } from 'knex'
import forkSafeDb, { type ForkSafeDbStats } from 'fastify-fork-safe-db'
import forkSafeWorker, { isWarmupRequest, type WarmupRequest } from 'fastify-fork-safe-db/worker'
import { loggerOptions, workerId, workerName } from './logging'
import type { WorkerStats } from './messages'
import { workerStatsChannel } from './stats-ipc'

// The API's own errors, in Fastify's shape ({ statusCode, code, error, message }).
const UserNotFound = createError('EXAMPLE_USER_NOT_FOUND', 'no user %s', 404)
const EmailTaken = createError('EXAMPLE_EMAIL_TAKEN', 'a user with the email %s exists already', 409)
// `users.id` is an INT UNSIGNED: anything above is not an id, and a 400, not a 404.
const MAX_ID = 4_294_967_295

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
  let requests = 0
  const worker = workerId()
  const app = Fastify({
    logger: loggerOptions(workerName()),
    // Unique across workers: `2-17` is worker 2's 17th request.
    genReqId: (raw) => isWarmupRequest(raw) ? `${worker}-warm-up` : `${worker}-${++requests}`,
    // Fastify's two lines per request become one, written below; the warm-up's requests (over a
    // hundred per worker start) are not logged at all.
    logController: new LogController({ disableRequestLogging: true }),
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
  const clientErrors = new WeakMap<object, string>()
  app.addHook('onSend', async (_request, reply) => {
    reply.header('x-worker-pid', String(process.pid))
  })
  // LOG_LEVEL=debug adds a line as each request arrives: with the line as it completes, a
  // request a worker received and never answered shows up.
  if (app.log.level === 'debug' || app.log.level === 'trace') {
    app.addHook('onRequest', async (request) => {
      if (!request.isWarmup) request.log.debug(`${request.method} ${request.url} received`)
    })
  }
  app.addHook('onResponse', async (request, reply) => {
    if (request.isWarmup) return
    request.log.info({ statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10, code: clientErrors.get(request) },
      `${request.method} ${request.url} ${reply.statusCode}`)
    responses += 1
    if (responses === options.maxRequests) options.onMaxRequests()
  })
  // A client's mistake (a 4xx) adds only its code to the request's one line; a server's (a 5xx)
  // is logged in full, with its stack.
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const statusCode = error.statusCode !== undefined && error.statusCode >= 400 ? error.statusCode : 500
    if (statusCode < 500) clientErrors.set(request, error.code)
    else request.log.error({ err: error }, error.message)
    return reply.code(statusCode).send(error)
  })

  app.get<{ Params: UserParams }>('/users/:id', {
    schema: { params: { type: 'object', properties: { id: { type: 'integer', minimum: 1, maximum: MAX_ID } }, required: ['id'] } }
  }, async (request) => {
    const user = await request.db('users').select('id', 'name', 'email').where({ id: request.params.id }).first()
    if (user === undefined) throw new UserNotFound(request.params.id)
    return user
  })

  app.post<{ Body: NewUser }>('/users', {
    schema: {
      body: {
        type: 'object',
        properties: { name: { type: 'string', minLength: 1, maxLength: 100 }, email: { type: 'string', format: 'email', maxLength: 200 } },
        required: ['name', 'email'],
        additionalProperties: false
      }
    }
  }, async (request, reply) => {
    const insert = async (db: Knex) => {
      try {
        return await db('users').insert({ name: request.body.name, email: request.body.email })
      } catch (error) {
        // The unique key on email answers for the race between two requests, not a SELECT first.
        if ((error as { code?: string }).code === 'ER_DUP_ENTRY') throw new EmailTaken(request.body.email)
        throw error
      }
    }
    if (!request.isWarmup) {
      const [id] = await insert(request.db)
      return reply.code(201).send({ id })
    }
    // Warm-up: the same statement, in a transaction that is rolled back before the reply goes
    // out: replying first would let the warm-up's next request find this connection still
    // borrowed, and the pool open one more than pool.min.
    const trx = await request.db.transaction()
    let id: number
    try {
      [id] = await insert(trx)
    } finally {
      await trx.rollback()
    }
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
