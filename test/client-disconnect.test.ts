import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { TcpProxy } from '../support/tcp-proxy'

// Nobody is waiting for the result of a request whose client went away: its running statement is
// cancelled on the server (KILL QUERY), so a user who gives up on a slow page does not keep a
// connection, and the server's CPU, busy for the rest of the query.

const fixture = perTestUser({ ownDatabase: true })
const STATEMENT_GONE_WITHIN_MILLIS = 500

let logged: LoggedApp
let app: FastifyInstance

beforeEach(async () => {
  logged = buildApp()
  app = logged.app
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 2 } })
  app.get('/slow', async (request) => request.db.raw('SELECT SLEEP(5) AS slow_statement'))
  app.get('/slow-in-transaction', async (request) => {
    const trx = await request.db.transaction()
    await trx('visits').insert({ id: 1 })
    await trx.raw('SELECT SLEEP(5) AS slow_statement')
    await trx.commit()
    return 'committed'
  })
  app.get('/fast', async (request) => request.db.raw('SELECT 1 AS fast'))
  await app.ready()
  await app.db.schema.createTable('visits', (table) => { table.integer('id').primary() })
  await app.listen({ port: 0, host: '127.0.0.1' })
})
afterEach(async () => { await app.close() })

/** Sends GET `path`, and hangs up as soon as its statement is running on the server. */
async function hangUpDuring (path: string): Promise<void> {
  const { port } = app.server.address() as AddressInfo
  const request = http.get({ host: '127.0.0.1', port, path, agent: false })
  const closed = new Promise((resolve) => request.once('close', resolve))
  request.on('error', () => {})
  await fixture.database.statementStarted(fixture.user.user, 'slow_statement')
  request.destroy()
  await closed
}

test('cancels the running statement of a client that disconnects', async () => {
  await hangUpDuring('/slow')
  expect(await fixture.database.stillRunningAfter(fixture.user.user, 'slow_statement', STATEMENT_GONE_WITHIN_MILLIS)).toBe(false)
  expect(logged.lines().some((line) => line.msg === 'client disconnected mid-request: cancelled its running queries' && line.cancelledQueries === 1)).toBe(true)
  // The pool serves the next request; the cancelled connection is never lent out again.
  expect((await app.inject('/fast')).statusCode).toBe(200)
  expect(await fixture.database.settledCount(fixture.user.user, 1)).toBeLessThanOrEqual(2)
  expect(app.db.client.pool.numUsed()).toBe(0)
})

test('rolls back the open transaction of a client that disconnects', async () => {
  await hangUpDuring('/slow-in-transaction')
  expect(await fixture.database.stillRunningAfter(fixture.user.user, 'slow_statement', STATEMENT_GONE_WITHIN_MILLIS)).toBe(false)
  // The insert made before the hang-up is gone with the transaction.
  expect(await app.db('visits').count({ rows: '*' }).first()).toEqual({ rows: 0 })
  expect(logged.lines().some((line) => line.msg === 'client disconnected mid-request: cancelled its running queries' && line.rolledBackTransactions === 1)).toBe(true)
})

test('leaves a statement alone once its response has been sent', async () => {
  const { port } = app.server.address() as AddressInfo
  const body = await new Promise<string>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/fast', agent: false }, (response) => {
      let text = ''
      response.on('data', (chunk: Buffer) => { text += chunk.toString() })
      response.on('end', () => resolve(text))
    }).on('error', reject)
  })
  expect(JSON.parse(body)).toEqual([[{ fast: 1 }], expect.any(Array)])
  expect(logged.lines().some((line) => typeof line.msg === 'string' && line.msg.startsWith('client disconnected'))).toBe(false)
})

test('a statement that fails to compile leaves nothing behind that a disconnect could cancel in another request', async () => {
  // Every round trip takes 600 ms, so the other request's statement is still running when the client hangs up.
  const target = new URL(fixture.user.url)
  const proxy = await TcpProxy.start({ target: { host: target.hostname, port: Number(target.port) }, delayMillis: 300 })
  const slow = buildApp()
  try {
    await slow.app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), pool: { min: 2, max: 2 } })
    let reached: () => void = () => {}
    const handlerWaiting = new Promise<void>((resolve) => { reached = resolve })
    let release: () => void = () => {}
    const held = new Promise<void>((resolve) => { release = resolve })
    slow.app.get('/compile-error', async (request) => {
      // knex emits 'start', then fails to compile: no statement of this request ever runs.
      await request.db('visits').where('id', undefined as unknown as number).catch(() => {})
      reached()
      await held
      return 'done'
    })
    await slow.app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = slow.app.server.address() as AddressInfo
    const hangingUp = http.get({ host: '127.0.0.1', port, path: '/compile-error', agent: false })
    hangingUp.on('error', () => {})
    const hungUp = new Promise((resolve) => hangingUp.once('close', resolve))
    await handlerWaiting

    // Other work streams a statement (knex emits no 'start' for a stream); hang up while it runs.
    const begun = new Promise<void>((resolve) => slow.app.db.client.once('query', () => resolve()))
    const rows: unknown[] = []
    const stream = slow.app.db.raw('SELECT SLEEP(0.5) AS streamed').stream()
    const streamed = new Promise((resolve, reject) => {
      stream.on('data', (row: unknown) => rows.push(row))
      stream.on('end', resolve)
      stream.on('error', reject)
    })
    await begun
    hangingUp.destroy()
    await hungUp
    await streamed
    release()

    expect(rows).toEqual([{ streamed: 0 }])
    expect(slow.lines().some((line) => typeof line.msg === 'string' && line.msg.startsWith('client disconnected'))).toBe(false)
  } finally {
    await slow.app.close()
    await proxy.close()
  }
})
