import Fastify, { type FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { perTestUser } from './helpers/database'

// A route option is never silently ignored, whatever the order of register() and the route:
// Fastify's own docs declare routes right below a register() they do not await, and such a
// route exists before the plugin loads (its onRoute hook never sees it).

const fixture = perTestUser({ ownDatabase: true })

let app: FastifyInstance
afterEach(async () => { await app.close() })

function transactionRoutes (instance: FastifyInstance): void {
  instance.get('/in-transaction', { db: { transaction: true } }, async (request) => (await request.db.raw('SELECT @@in_transaction AS t'))[0][0].t)
  instance.post('/fails-after-update', { db: { transaction: true } }, async (request) => {
    await request.db('counters').update({ value: 1 })
    throw new Error('the handler failed after its update')
  })
}

async function counter (): Promise<number> {
  return (await app.db('counters').first('value')).value
}

/** The routes of transactionRoutes() run in a transaction: inside one, and rolled back on a throw. */
async function expectTransactions (): Promise<void> {
  await app.db.schema.createTable('counters', (table) => { table.integer('value') })
  await app.db('counters').insert({ value: 0 })
  expect((await app.inject('/in-transaction')).body).toBe('1')
  expect((await app.inject({ method: 'POST', url: '/fails-after-update' })).statusCode).toBe(500)
  expect(await counter()).toBe(0)
}

test('gives a route declared below a register() that was not awaited its transaction', async () => {
  app = Fastify()
  app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 2 } })
  transactionRoutes(app)
  await app.ready()
  await expectTransactions()
})

test('gives a route declared before an awaited register() its transaction', async () => {
  app = Fastify()
  transactionRoutes(app)
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 2 } })
  await app.ready()
  await expectTransactions()
})

test('refuses to start when a route below an unawaited register() has a malformed option', async () => {
  app = Fastify()
  app.register(forkSafeDb, { connection: fixture.user.url, warmup: false })
  // @ts-expect-error a malformed value, as JavaScript callers can write it
  app.get('/malformed', { db: { transaction: 'yes' } }, async () => 'never')
  await expect(app.ready()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_INVALID_OPTION' })
})

test('refuses to start when a route asks for a transaction under a decorator no registration has', async () => {
  app = Fastify()
  app.register(forkSafeDb, { connection: fixture.user.url, warmup: false })
  app.get('/replica', { replica: { transaction: true } } as never, async () => 'never')
  await expect(app.ready()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_ROUTE_OPTION_UNCLAIMED', message: expect.stringContaining('GET /replica (replica)') })
})

test('leaves routes without the option alone, before and after an awaited register()', async () => {
  app = Fastify()
  app.get('/before', async (request) => (await request.db.raw('SELECT @@in_transaction AS t'))[0][0].t)
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 2 } })
  app.get('/after', async (request) => (await request.db.raw('SELECT @@in_transaction AS t'))[0][0].t)
  await app.ready()
  expect([(await app.inject('/before')).body, (await app.inject('/after')).body]).toEqual(['0', '0'])
})
