import type { FastifyInstance } from 'fastify'
import forkSafeDb, { type ForkSafeDbOptions } from '../lib'
import { TcpProxy } from '../support/tcp-proxy'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { request } from './helpers/http-client'
import { barrier } from './helpers/barrier'

// A transaction that fails says whether its COMMIT was sent: TRANSACTION_ABORTED (nothing was
// committed, safe to run again) or COMMIT_UNKNOWN (the COMMIT was written, its answer lost).
// Real connections; the losses through the TCP proxy; the deadlock between two real transactions
// ordered by events (both hold their first lock before either asks for its second).

const fixture = perTestUser({ ownDatabase: true })

let app: FastifyInstance | undefined
let proxy: TcpProxy | undefined

beforeEach(async () => {
  await fixture.database.admin.query(`CREATE TABLE \`${fixture.user.user}\`.accounts (id INT PRIMARY KEY, balance INT NOT NULL) ENGINE=InnoDB`)
  await fixture.database.admin.query(`INSERT INTO \`${fixture.user.user}\`.accounts VALUES (1, 100), (2, 100)`)
  await fixture.database.admin.query(`CREATE TABLE \`${fixture.user.user}\`.items (id INT PRIMARY KEY) ENGINE=InnoDB`)
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await proxy?.close()
  proxy = undefined
})

async function register (options: Partial<ForkSafeDbOptions> = {}, connection: string = fixture.user.url): Promise<FastifyInstance> {
  app = buildApp().app
  await app.register(forkSafeDb, { connection, pool: { min: 1, max: 2 }, ...options })
  return app
}

async function throughProxy (): Promise<string> {
  proxy = await TcpProxy.start({ target: { host: fixture.user.connection.host, port: fixture.user.connection.port } })
  return proxy.urlFor(fixture.user.url)
}

async function itemIds (): Promise<number[]> {
  const [rows] = await fixture.database.admin.query(`SELECT id FROM \`${fixture.user.user}\`.items ORDER BY id`) as unknown as [Array<{ id: number }>]
  return rows.map((row) => row.id)
}

test('a deadlock\'s victim rejects with TRANSACTION_ABORTED, commitSent false, its cause the coded 1213', async () => {
  const instance = await register()
  const bothLocked = barrier(2)
  const transfer = (first: number, second: number) => instance.db.transaction(async (trx) => {
    await trx('accounts').where({ id: first }).increment('balance', 1)
    await bothLocked()
    await trx('accounts').where({ id: second }).increment('balance', 1)
  })
  const outcomes = await Promise.allSettled([transfer(1, 2), transfer(2, 1)])
  const failed = outcomes.filter((outcome) => outcome.status === 'rejected')
  expect(failed).toHaveLength(1)
  expect((failed[0] as PromiseRejectedResult).reason).toMatchObject({
    code: 'FST_FORK_SAFE_DB_TRANSACTION_ABORTED',
    statusCode: 503,
    commitSent: false,
    cause: expect.objectContaining({ code: 'FST_FORK_SAFE_DB_DEADLOCK', errno: 1213 })
  })
})

test('a statement that catches its deadlock inside the callback still sees FST_FORK_SAFE_DB_DEADLOCK', async () => {
  const instance = await register()
  const bothLocked = barrier(2)
  const caught: unknown[] = []
  const transfer = (first: number, second: number) => instance.db.transaction(async (trx) => {
    await trx('accounts').where({ id: first }).increment('balance', 1)
    await bothLocked()
    try {
      await trx('accounts').where({ id: second }).increment('balance', 1)
    } catch (error) {
      caught.push(error)
      throw error
    }
  })
  await Promise.allSettled([transfer(1, 2), transfer(2, 1)])
  expect(caught).toEqual([expect.objectContaining({ code: 'FST_FORK_SAFE_DB_DEADLOCK', errno: 1213 })])
})

test('a connection lost before COMMIT rejects with TRANSACTION_ABORTED, commitSent false, and nothing is committed', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  const outcome = instance.db.transaction(async (trx) => {
    await trx('items').insert({ id: 1 })
    proxy?.resetAll()
    await trx.raw('SELECT 1')
  })
  await expect(outcome).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_TRANSACTION_ABORTED', commitSent: false, cause: expect.anything() })
  expect(await itemIds()).toEqual([])
})

test('a COMMIT on a connection lost earlier is not sent: the transaction is ABORTED, its lost statement having been caught', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  let caught: unknown
  const outcome = instance.db.transaction(async (trx) => {
    await trx('items').insert({ id: 1 })
    proxy?.resetAll()
    caught = await trx.raw('SELECT 1').then(() => undefined, (error: unknown) => error)
  })
  await expect(outcome).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_TRANSACTION_ABORTED', commitSent: false })
  expect(caught).toBeInstanceOf(Error)
  expect(await itemIds()).toEqual([])
})

test('a COMMIT whose answer is lost rejects with COMMIT_UNKNOWN, commitSent true: the server did commit', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  const outcome = instance.db.transaction(async (trx) => {
    await trx('items').insert({ id: 1 })
    if (proxy !== undefined) proxy.loseReplyToQuery = /COMMIT/
  })
  await expect(outcome).rejects.toMatchObject({
    code: 'FST_FORK_SAFE_DB_COMMIT_UNKNOWN',
    statusCode: 500,
    commitSent: true,
    cause: expect.objectContaining({ code: 'FST_FORK_SAFE_DB_CONNECTION_LOST' })
  })
  // Why it is never run again: it was committed.
  expect(await itemIds()).toEqual([1])
})

test('a COMMIT that outlives queryTimeoutMillis rejects with COMMIT_UNKNOWN, its cause the timeout', async () => {
  const through = await throughProxy()
  const instance = await register({ queryTimeoutMillis: 300 }, through)
  const outcome = instance.db.transaction(async (trx) => {
    await trx('items').insert({ id: 1 })
    // The COMMIT never reaches the server, and no answer comes: the plugin cannot know that.
    if (proxy !== undefined) proxy.swallowQuery = /COMMIT/
  })
  await expect(outcome).rejects.toMatchObject({
    code: 'FST_FORK_SAFE_DB_COMMIT_UNKNOWN',
    commitSent: true,
    cause: expect.objectContaining({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT', timeout: 300 })
  })
})

test('the promise form\'s commit() rejects with COMMIT_UNKNOWN when the COMMIT\'s answer is lost, as does its executionPromise', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  const trx = await instance.db.transaction()
  await trx('items').insert({ id: 1 })
  if (proxy !== undefined) proxy.loseReplyToQuery = /COMMIT/
  const settled = trx.executionPromise.then(() => undefined, (error: unknown) => error)
  // Stock knex resolves commit() here: the caller would believe it committed.
  await expect(trx.commit()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_COMMIT_UNKNOWN', commitSent: true })
  expect(await settled).toMatchObject({ code: 'FST_FORK_SAFE_DB_COMMIT_UNKNOWN', commitSent: true })
})

test('the promise form\'s commit() resolves as knex\'s does when the COMMIT succeeds', async () => {
  const instance = await register()
  const trx = await instance.db.transaction()
  await trx('items').insert({ id: 1 })
  await trx.commit()
  await expect(trx.executionPromise).resolves.toBeUndefined()
  expect(await itemIds()).toEqual([1])
})

test('a route transaction whose connection is lost before COMMIT answers 503 TRANSACTION_ABORTED with Retry-After over a socket', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  instance.post('/credit', { db: { transaction: true } }, async (request) => {
    await request.db('items').insert({ id: 1 })
    proxy?.resetAll()
    // The handler catches the lost statement and answers as if all went well: the COMMIT cannot.
    await request.db.raw('SELECT 1').catch(() => {})
    return { ok: true }
  })
  await instance.listen({ port: 0, host: '127.0.0.1' })
  const response = await request(instance, '/credit', { method: 'POST' })
  expect(response.status).toBe(503)
  expect(response.headers['retry-after']).toBe('1')
  expect(JSON.parse(response.body)).toMatchObject({ code: 'FST_FORK_SAFE_DB_TRANSACTION_ABORTED' })
  expect(await itemIds()).toEqual([])
})

test('a route transaction whose COMMIT answer is lost answers 500 COMMIT_UNKNOWN without Retry-After over a socket', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  instance.post('/credit', { db: { transaction: true } }, async (request) => {
    await request.db('items').insert({ id: 1 })
    if (proxy !== undefined) proxy.loseReplyToQuery = /COMMIT/
    return { ok: true }
  })
  await instance.listen({ port: 0, host: '127.0.0.1' })
  const response = await request(instance, '/credit', { method: 'POST' })
  expect(response.status).toBe(500)
  expect(response.headers['retry-after']).toBeUndefined()
  expect(JSON.parse(response.body)).toMatchObject({ code: 'FST_FORK_SAFE_DB_COMMIT_UNKNOWN' })
})

test('an error of the callback\'s own (a duplicate key) rejects the transaction unchanged', async () => {
  const instance = await register()
  await instance.db('items').insert({ id: 1 })
  await expect(instance.db.transaction(async (trx) => trx('items').insert({ id: 1 }))).rejects.toMatchObject({ code: 'ER_DUP_ENTRY' })
})
