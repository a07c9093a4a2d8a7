import cluster from 'node:cluster'
import createError from '@fastify/error'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Knex } from 'knex'
import forkSafeDb from 'fastify-fork-safe-db'
import forkSafeWorker, { isWarmupRequest, type WarmupRequest } from 'fastify-fork-safe-db/worker'
import { requestRecycle } from 'fastify-fork-safe-db/cluster'
import { config, loggerOptions } from './config'
import { answerMetricsRequests, workerMeterProvider } from './worker-metrics'

// The users API: a worker's whole app, on the fork-safe pool and the worker helper.

const UserNotFound = createError('EXAMPLE_USER_NOT_FOUND', 'no user %s', 404)
const EmailTaken = createError('EXAMPLE_EMAIL_TAKEN', 'a user with the email %s exists already', 409)
// `users.id` is an INT UNSIGNED: anything above is not an id, and a 400, not a 404.
const MAX_ID = 4_294_967_295

// Sent to the app before it listens, 20 rounds: every route, a 404, a validation error, and a
// write whose transaction is rolled back (see POST /users).
const WARMUP: WarmupRequest[] = [
  { url: '/users/1' },
  { url: '/users/1000000' },
  { method: 'POST', url: '/users', body: { name: 'warm-up', email: 'warm-up@example.com' } },
  { method: 'POST', url: '/users', body: { name: '' } },
  { url: '/health' },
  { url: '/stats' }
]

export async function buildServer (): Promise<FastifyInstance> {
  const worker = cluster.worker?.id ?? process.pid
  let requests = 0
  let responses = 0
  const app = Fastify({
    logger: loggerOptions(`worker ${worker}`),
    // Unique across workers: `2-17` is worker 2's 17th request.
    genReqId: (raw) => isWarmupRequest(raw) ? `${worker}-warm-up` : `${worker}-${++requests}`,
    // While a worker drains, requests on its kept-alive connections are still served (with
    // `Connection: close`); idle ones are closed by the worker helper's drain, not at once.
    return503OnClosing: false,
    forceCloseConnections: false
  })
  // The warm-up's requests (over a hundred per start) stay out of the log.
  app.setChildLoggerFactory((logger, bindings, options, raw) => logger.child(bindings, isWarmupRequest(raw) ? { ...options, level: 'silent' } : options))
  // Each worker's pool.max is capped so that the workers and the replacements that run next to
  // them during a recycle or a roll fit within the server's max_connections.
  // Its metrics (semantic-convention names) go to a meter provider of this worker's own, read
  // when the primary's GET /metrics asks (worker-metrics.ts).
  const telemetry = config.metrics.port === 0 ? undefined : workerMeterProvider()
  // Before the database plugin: its onClose hook runs after the plugin's, so the worker answers
  // until its pool has closed, and the provider is shut down last.
  if (telemetry !== undefined) answerMetricsRequests(app, telemetry.meterProvider, telemetry.reader)
  await app.register(forkSafeDb, {
    connection: config.mysqlUrl,
    pool: config.pool,
    budget: { workers: config.workers + config.overlap },
    metrics: telemetry === undefined ? false : { meterProvider: telemetry.meterProvider }
  })
  // After the database plugin: the warm-up runs on a warm pool, and a retire closes the pool last.
  await app.register(forkSafeWorker, { warmup: { requests: WARMUP } })

  // Which worker answered: a cluster demo shows it, a benchmark counts it.
  app.addHook('onSend', async (_request, reply) => { reply.header('x-worker-pid', String(process.pid)) })
  app.addHook('onResponse', async (request) => {
    // The primary starts a replacement, and retires this worker once the replacement listens.
    if (!request.isWarmup && ++responses === config.maxRequests) requestRecycle()
  })

  app.get<{ Params: { id: number } }>('/users/:id', {
    schema: { params: { type: 'object', properties: { id: { type: 'integer', minimum: 1, maximum: MAX_ID } }, required: ['id'] } }
  }, async (request) => {
    const user = await request.db('users').select('id', 'name', 'email').where({ id: request.params.id }).first()
    if (user === undefined) throw new UserNotFound(request.params.id)
    return user
  })

  app.post<{ Body: { name: string, email: string } }>('/users', {
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
        const [id] = await db('users').insert({ name: request.body.name, email: request.body.email })
        return id
      } catch (error) {
        // The unique key settles two racing sign-ups, not a SELECT first.
        if ((error as { code?: string }).code === 'ER_DUP_ENTRY') throw new EmailTaken(request.body.email)
        throw error
      }
    }
    if (!request.isWarmup) return reply.code(201).send({ id: await insert(request.db) })
    // Warm-up: the same statement in a transaction rolled back before replying: replying first
    // would let the next warm-up request find the connection still borrowed, and the pool open
    // one more than pool.min.
    const trx = await request.db.transaction()
    let id: number
    try {
      id = await insert(trx)
    } finally {
      await trx.rollback()
    }
    return reply.code(201).send({ id })
  })

  // Readiness: one borrow and a ping within a short deadline (check() never throws).
  app.get('/health', async (_request, reply) => {
    const healthy = await app.dbPool.check()
    return reply.code(healthy ? 200 : 503).send({ status: healthy ? 'ok' : 'unavailable', pid: process.pid })
  })
  // This worker's pool: connections, waits, cold acquires, its budget.
  app.get('/stats', async () => ({ pid: process.pid, responses, pool: app.dbPool.stats() }))
  return app
}
