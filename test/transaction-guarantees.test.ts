import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { TcpProxy } from '../support/tcp-proxy'

// Every guarantee must hold inside a transaction as it does outside one: knex builds each
// transaction's client from the client's prototype, so anything the plugin did to the client
// instance alone would not reach `request.db.transaction()` or a `{ db: { transaction: true } }`
// route. Each test runs the same scenario on both.

const fixture = perTestUser({ ownDatabase: true })
const QUERY_TIMEOUT_MILLIS = 200
// Each chunk of a new connection (the KILL's) waits this long: a KILL that the caller waited for
// would take several of them (handshake, then the KILL itself).
const SLOW_KILL_DELAY_MILLIS = 500
const ANSWERED_WITHIN_MILLIS = QUERY_TIMEOUT_MILLIS + 400

let proxy: TcpProxy
let app: FastifyInstance | undefined

beforeEach(async () => {
  const target = new URL(fixture.user.url)
  proxy = await TcpProxy.start({ target: { host: target.hostname, port: Number(target.port) } })
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await proxy.close()
})

async function build (options: Record<string, unknown> = {}): Promise<FastifyInstance> {
  app = buildApp().app
  await app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), pool: { min: 1, max: 2 }, ...options })
  app.get('/slow-in-transaction', async (request) => request.db.transaction(async (trx) => trx.raw('SELECT SLEEP(5) AS slow_statement')))
  app.get('/slow-in-route', { db: { transaction: true } }, async (request) => request.db.raw('SELECT SLEEP(5) AS slow_statement'))
  app.post('/insert-then-slow-in-route', { db: { transaction: true } }, async (request) => {
    await request.db('visits').insert({ id: 1 })
    return request.db.raw('SELECT SLEEP(5) AS slow_statement')
  })
  await app.ready()
  await app.db.schema.createTable('visits', (table) => { table.integer('id').primary() })
  return app
}

describe.each([
  ['request.db.transaction()', '/slow-in-transaction'],
  ['a { db: { transaction: true } } route', '/slow-in-route']
])('a query timeout inside %s', (_where, path) => {
  test('answers the caller on time though the KILL connection is slow, and still stops the statement', async () => {
    const instance = await build({ queryTimeoutMillis: QUERY_TIMEOUT_MILLIS })
    proxy.delayNewMillis = SLOW_KILL_DELAY_MILLIS
    const sent = performance.now()
    const response = await instance.inject(path)
    const took = performance.now() - sent
    expect(response.statusCode).toBe(503)
    expect(response.json()).toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })
    expect(took).toBeLessThan(ANSWERED_WITHIN_MILLIS)
    // The KILL went through the slow connection in the background.
    expect(await fixture.database.stillRunningAfter(fixture.user.user, 'slow_statement', 10 * SLOW_KILL_DELAY_MILLIS)).toBe(false)
  })
})

test('a client that disconnects inside a { db: { transaction: true } } route has its statement cancelled and its transaction rolled back', async () => {
  const instance = await build()
  await instance.listen({ port: 0, host: '127.0.0.1' })
  const { port } = instance.server.address() as AddressInfo
  const request = http.request({ host: '127.0.0.1', port, path: '/insert-then-slow-in-route', method: 'POST', agent: false })
  request.on('error', () => {})
  const closed = new Promise((resolve) => request.once('close', resolve))
  request.end()
  await fixture.database.statementStarted(fixture.user.user, 'slow_statement')
  request.destroy()
  await closed
  expect(await fixture.database.stillRunningAfter(fixture.user.user, 'slow_statement', 500)).toBe(false)
  // The insert made before the hang-up went with the rolled-back transaction.
  expect(await instance.db('visits').count({ rows: '*' }).first()).toEqual({ rows: 0 })
})

test('close() keeps closeTimeoutMillis while a transaction on fastify.db is held open and idle, leaving no connection', async () => {
  const CLOSE_TIMEOUT_MILLIS = 1000
  const instance = await build({ closeTimeoutMillis: CLOSE_TIMEOUT_MILLIS })
  const trx = await instance.db.transaction()
  await trx.raw('SELECT 1')
  const started = performance.now()
  let timer: NodeJS.Timeout | undefined
  const gaveUp = new Promise<'gave up'>((resolve) => { timer = setTimeout(() => resolve('gave up'), CLOSE_TIMEOUT_MILLIS + 3000) })
  try {
    const outcome = await Promise.race([instance.close().then(() => 'closed' as const), gaveUp])
    expect(outcome).toBe('closed')
    expect(performance.now() - started).toBeLessThan(CLOSE_TIMEOUT_MILLIS + 1000)
    app = undefined
    expect(await fixture.database.settledCount(fixture.user.user, 0)).toBe(0)
  } finally {
    clearTimeout(timer)
    // Lets a close() that did not finish do so, so the test leaves nothing behind either way.
    if (!trx.isCompleted()) await trx.rollback().catch(() => {})
  }
})
