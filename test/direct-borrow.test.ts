import { createHook } from 'node:async_hooks'
import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// A free connection is lent without tarn's queue when nothing waits for one (the tarn Pool
// subclass in lib/driver/tarn-pool.ts, when lib/pool/direct-borrow.ts allows). These tests hold
// it to doing what tarn's acquire does: the same events, the same check, the same destruction of
// a dead connection, a pool that still waits for it on destroy; and to what it is for: no
// acquire-deadline timer on a warm borrow.

const fixture = perTestUser()

interface TarnView {
  numUsed: () => number
  numFree: () => number
  numPendingValidations: () => number
  on: (event: string, listener: (...args: unknown[]) => void) => void
}

interface ClientView {
  pool: TarnView
  acquireConnection: () => Promise<object>
  releaseConnection: (connection: object) => Promise<void>
}

let app: FastifyInstance

beforeEach(() => { app = buildApp().app })
afterEach(async () => { await app.close() })

async function readyWith (options: Record<string, unknown> = {}): Promise<ClientView> {
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 2, max: 2 }, ...options })
  await app.ready()
  return app.db.client as unknown as ClientView
}

test('lends a free connection before its check without queueing it in tarn, and tarn\'s listeners hear the acquire', async () => {
  const client = await readyWith()
  const events: Array<[string, unknown]> = []
  for (const event of ['acquireRequest', 'acquireSuccess', 'acquireFail']) client.pool.on(event, (eventId) => events.push([event, eventId]))
  const borrowing = client.acquireConnection()
  // Taken from the free list at once, as tarn takes one, but with no pending validation in tarn.
  expect(client.pool.numUsed()).toBe(1)
  expect(client.pool.numFree()).toBe(1)
  expect(client.pool.numPendingValidations()).toBe(0)
  const connection = await borrowing
  await client.releaseConnection(connection)
  expect(events).toEqual([['acquireRequest', expect.any(Number)], ['acquireSuccess', events[0][1]]])
  expect(client.pool.numUsed()).toBe(0)
  expect(client.pool.numFree()).toBe(2)
})

test('arms no timer for a borrow from a warm pool, where tarn arms two per acquire', async () => {
  // The default query timeout keeps deadlines of its own; off, a query on a warm pool needs no timer.
  const client = await readyWith({ queryTimeoutMillis: 0 })
  await app.db.raw('SELECT 1')
  let timers = 0
  const hook = createHook({ init (_id, type) { if (type === 'Timeout') timers += 1 } }).enable()
  try {
    for (let i = 0; i < 10; i++) await app.db.raw('SELECT 1')
  } finally {
    hook.disable()
  }
  expect(timers).toBe(0)
  expect(client.pool.numUsed()).toBe(0)
})

test('a user\'s pool.validate still runs on every borrow, with tarn\'s acquire deadline around it', async () => {
  let validated = 0
  const client = await readyWith({ pool: { min: 1, max: 1, validate: () => { validated += 1; return true } } })
  validated = 0
  const borrowing = client.acquireConnection()
  // Through tarn's queue: the borrow waits for its check as one of tarn's pending validations.
  expect(client.pool.numPendingValidations()).toBe(1)
  await client.releaseConnection(await borrowing)
  for (let i = 0; i < 3; i++) await app.db.raw('SELECT 1')
  expect(validated).toBe(4)
})

test('a free connection killed on the server is destroyed as tarn destroys one, and the borrow gets a live one', async () => {
  const client = await readyWith({ pool: { min: 1, max: 1 } })
  const destroyed = new Promise((resolve) => client.pool.on('destroySuccess', (_eventId, connection) => resolve(connection)))
  const [victim] = await fixture.database.connectionIds(fixture.user.user)
  await fixture.database.kill(victim)
  const [rows] = await app.db.raw('SELECT CONNECTION_ID() AS id')
  expect(Number(rows[0].id)).not.toBe(victim)
  expect(((await destroyed) as { threadId: number }).threadId).toBe(victim)
  expect(client.pool.numUsed()).toBe(0)
  expect(client.pool.numFree()).toBe(1)
  expect(await fixture.database.connectionIds(fixture.user.user)).toEqual([Number(rows[0].id)])
})

test('destroying the pool waits for a directly lent connection to come back, and does not close it under its borrower', async () => {
  const client = await readyWith()
  const borrowing = client.acquireConnection()
  let destroyedYet = false
  const destroying = app.db.destroy().then(() => { destroyedYet = true })
  const connection = await borrowing
  const [rows] = await app.db.client.raw('SELECT 1 AS one').connection(connection)
  expect(rows[0].one).toBe(1)
  expect(destroyedYet).toBe(false)
  await client.releaseConnection(connection)
  await destroying
  expect(await fixture.database.settledCount(fixture.user.user, 0)).toBe(0)
})
