import cluster from 'node:cluster'
import Fastify from 'fastify'
import knex from 'knex'
import pino from 'pino'
import forkSafeWorker from 'fastify-fork-safe-db/worker'
import { readConfig } from '../example-app/config'
import type { PrimaryMessage, WorkerMessage } from '../example-app/messages'
import { chooseSchedulingPolicy } from '../example-app/scheduling'
import { Supervisor } from '../example-app/supervisor'

// The respawn benchmark's baseline, "what people do today": the same cluster supervisor and
// retire as the example, but each worker holds a plain knex instance in a module-level closure,
// which opens its first connection when the first request needs it, and nothing warms its
// request path.

async function runWorker (): Promise<void> {
  const config = readConfig()
  const db = knex({ client: 'mysql2', connection: config.mysqlUrl, pool: { min: config.poolMin, max: config.poolMax } })
  const app = Fastify({ logger: { level: process.env.LOG_LEVEL ?? 'warn' }, return503OnClosing: false, forceCloseConnections: false })
  app.addHook('onClose', async () => db.destroy())
  await app.register(forkSafeWorker)
  let responses = 0
  app.addHook('onSend', async (_request, reply) => { reply.header('x-worker-pid', String(process.pid)) })
  app.addHook('onResponse', async () => {
    responses += 1
    if (responses === config.maxRequests && process.connected) process.send?.({ type: 'recycle' } satisfies WorkerMessage)
  })
  app.get<{ Params: { id: string } }>('/users/:id', async (request, reply) => {
    const user = await db('users').select('id', 'name', 'email').where({ id: Number(request.params.id) }).first()
    return user ?? reply.code(404).send({ error: 'Not Found' })
  })
  process.on('message', (message: PrimaryMessage) => {
    if (message?.type === 'retire') app.retire('asked by the primary').catch(() => process.exit(1))
  })
  await app.listen({ port: config.port, host: config.host })
}

async function runPrimary (): Promise<void> {
  const log = pino({ name: 'primary' })
  const config = readConfig()
  if (config.mysqlUrl === undefined) throw new Error('MYSQL_URL is required')
  // The example's policy, so that only the pool differs.
  chooseSchedulingPolicy()
  const supervisor = new Supervisor({
    workers: config.workers,
    log,
    env: { MYSQL_URL: config.mysqlUrl, PORT: String(config.port), HOST: config.host }
  })
  const stop = () => { supervisor.shutdown().then(() => log.info('all workers exited; bye'), () => { process.exitCode = 1 }) }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  await supervisor.start()
  log.info('all workers listening')
}

const run = cluster.isPrimary ? runPrimary : runWorker
run().catch((error: unknown) => {
  pino().fatal({ err: error }, 'could not start')
  process.exit(1)
})
