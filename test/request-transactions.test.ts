import { Transform } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// A transaction is request-scoped: one that a handler forgets must not hold its connection and
// its locks until wait_timeout, and a route can ask to run in one that ends with the response.

const fixture = perTestUser({ ownDatabase: true })
const LEAK_MESSAGE = 'a transaction begun through request.db was neither committed nor rolled back when the response ended; rolling it back'

let logged: LoggedApp
let app: FastifyInstance

beforeEach(async () => {
  logged = buildApp()
  app = logged.app
  // One connection: a leaked transaction that kept it would stall every later request.
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 1 } })
  app.get('/connection-id', async (request) => (await request.db.raw('SELECT CONNECTION_ID() AS id'))[0][0].id)
  app.get('/names', async (request) => (await request.db('names').orderBy('name').pluck('name')))
  app.post('/forgetful', async (request) => {
    const trx = await request.db.transaction()
    await trx('names').insert({ name: 'never-committed' })
    return { id: (await trx.raw('SELECT CONNECTION_ID() AS id'))[0][0].id }
  })
  app.post('/hijacked-forgetful', async (request, reply) => {
    // A route that answers on the raw response (server-sent events, a proxy): Fastify skips its
    // onSend hooks, and still runs onResponse.
    const trx = await request.db.transaction()
    await trx('names').insert({ name: 'never-committed' })
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.end('done by hand')
  })
  app.get('/streamed', async (request, reply) => {
    // The transaction is still open when the reply starts and ends with the body.
    const trx = await request.db.transaction()
    const body = trx('names').orderBy('name').stream().pipe(new Transform({
      writableObjectMode: true,
      transform (row: { name: string }, _encoding, done) { done(null, `${row.name}\n`) }
    }))
    body.once('end', () => { trx.commit().catch(() => {}) })
    return reply.type('text/plain').send(body)
  })
  app.post('/tidy', async (request) => {
    const trx = await request.db.transaction()
    await trx('names').insert({ name: 'committed' })
    await trx.commit()
    await request.db.transaction(async (inner) => inner('names').insert({ name: 'callback' }))
    return 'ok'
  })
  app.post<{ Body: { names: string[], fail?: boolean, status?: number } }>('/in-transaction', { db: { transaction: true } }, async (request, reply) => {
    for (const name of request.body.names) await request.db('names').insert({ name })
    if (request.body.fail === true) throw new Error('the handler failed after its inserts')
    if (request.body.status !== undefined) return reply.code(request.body.status).send({ refused: true })
    return { inserted: request.body.names.length }
  })
  app.post('/doomed', { db: { transaction: true } }, async (request) => {
    await request.db('names').insert({ name: 'doomed' })
    // Another connection kills this one before the commit.
    const [[{ id }]] = await request.db.raw('SELECT CONNECTION_ID() AS id')
    await fixture.database.kill(id)
    return 'looks fine'
  })
  await app.ready()
  await app.db.schema.createTable('names', (table) => { table.string('name', 40).primary() })
})
afterEach(async () => { await app.close() })

/** Resolves when the connection is back in the pool (the rollback runs after the response). */
async function connectionReturned (): Promise<void> {
  const pool = app.db.client.pool
  while (pool.numUsed() > 0) await new Promise((resolve) => setImmediate(resolve))
}

describe('a forgotten transaction', () => {
  test('is rolled back when the response ends, and its connection is reused', async () => {
    const forgetful = await app.inject({ method: 'POST', url: '/forgetful' })
    expect(forgetful.statusCode).toBe(200)
    await connectionReturned()
    expect((await app.inject('/names')).json()).toEqual([])
    // Same server connection: returned to the pool, not discarded and not held.
    expect((await app.inject('/connection-id')).json()).toBe(forgetful.json().id)
  })

  test('is logged as an error with its route and request id', async () => {
    await app.inject({ method: 'POST', url: '/forgetful' })
    await connectionReturned()
    const leak = logged.lines().find((line) => line.msg === LEAK_MESSAGE)
    expect(leak).toMatchObject({ level: 50, route: 'POST /forgetful', requestId: 'req-1', reqId: 'req-1', transactions: 1 })
  })

  test('is rolled back after a hijacked reply too', async () => {
    const hijacked = await app.inject({ method: 'POST', url: '/hijacked-forgetful' })
    expect(hijacked.body).toBe('done by hand')
    await connectionReturned()
    expect((await app.inject('/names')).json()).toEqual([])
    expect(logged.lines().filter((line) => line.msg === LEAK_MESSAGE)).toHaveLength(1)
  })

  test('is not cut short while a stream read from it is still being sent', async () => {
    await app.db('names').insert([{ name: 'first' }, { name: 'second' }])
    const streamed = await app.inject('/streamed')
    expect(streamed.body).toBe('first\nsecond\n')
    await connectionReturned()
    expect(logged.lines().some((line) => line.msg === LEAK_MESSAGE)).toBe(false)
  })

  test('is not reported when the handler commits, or uses the callback form', async () => {
    expect((await app.inject({ method: 'POST', url: '/tidy' })).statusCode).toBe(200)
    expect((await app.inject('/names')).json()).toEqual(['callback', 'committed'])
    expect(logged.lines().some((line) => line.msg === LEAK_MESSAGE)).toBe(false)
  })
})

describe('the { db: { transaction: true } } route option', () => {
  test('commits when the handler succeeds', async () => {
    const response = await app.inject({ method: 'POST', url: '/in-transaction', payload: { names: ['ada', 'grace'] } })
    expect(response.json()).toEqual({ inserted: 2 })
    expect((await app.inject('/names')).json()).toEqual(['ada', 'grace'])
  })

  test('rolls back when the handler throws', async () => {
    const response = await app.inject({ method: 'POST', url: '/in-transaction', payload: { names: ['ada'], fail: true } })
    expect(response.statusCode).toBe(500)
    expect((await app.inject('/names')).json()).toEqual([])
  })

  test('rolls back when the handler replies with an error status', async () => {
    const response = await app.inject({ method: 'POST', url: '/in-transaction', payload: { names: ['ada'], status: 409 } })
    expect(response.statusCode).toBe(409)
    expect((await app.inject('/names')).json()).toEqual([])
  })

  test('answers with an error, not a success, when the commit fails', async () => {
    const response = await app.inject({ method: 'POST', url: '/doomed' })
    expect(response.statusCode).toBeGreaterThanOrEqual(500)
    expect(response.body).not.toContain('looks fine')
    expect((await app.inject('/names')).json()).toEqual([])
  })

  test('builds no pool for a request turned away before its handler (a 400 from validation)', async () => {
    const lazy = buildApp().app
    await lazy.register(forkSafeDb, { connection: fixture.user.url, warmup: false })
    lazy.post('/validated', { db: { transaction: true }, schema: { body: { type: 'object', required: ['name'] } } }, async () => 'never')
    try {
      await lazy.ready()
      expect((await lazy.inject({ method: 'POST', url: '/validated', payload: {} })).statusCode).toBe(400)
      expect(lazy.dbPool.stats().state).toBe('new')
    } finally {
      await lazy.close()
    }
  })

  test('is refused at registration when it is not { transaction: boolean }', async () => {
    const bad = buildApp().app
    await bad.register(forkSafeDb, { connection: fixture.user.url })
    expect(() => bad.get('/bad', { db: { transaction: 'yes' } as never }, async () => 'never')).toThrow(
      expect.objectContaining({ code: 'FST_FORK_SAFE_DB_INVALID_OPTION' })
    )
    await bad.close()
  })
})
