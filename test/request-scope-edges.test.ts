import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { hangUpWhen, request } from './helpers/http-client'

// The edges of a request's life on request.db: a transaction begun once the response has ended
// is refused (nothing would end it), one the plugin rolls back rejects with the reason, and a
// streamed statement is cancelled on a hang-up like any other.

const fixture = perTestUser({ ownDatabase: true })
const STATEMENT_GONE_WITHIN_MILLIS = 500

let logged: LoggedApp
let app: FastifyInstance
/** What a handler's unawaited transaction settled with, for the test to read. */
let settled: Promise<unknown>

function outcome (promise: Promise<unknown>): Promise<unknown> {
  return promise.then(() => 'resolved', (error: unknown) => error)
}

beforeEach(async () => {
  logged = buildApp()
  app = logged.app
  settled = Promise.resolve('not run')
  // One connection: a transaction queued behind the handler's statement begins after the response.
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 1 } })
  app.get('/begin-after-response', async (request, reply) => {
    reply.raw.once('finish', () => {
      settled = outcome(request.db.transaction(async (trx) => trx('names').insert({ name: 'after-response' })))
    })
    return 'ok'
  })
  app.get('/begin-waits-past-response', async (request) => {
    request.db.raw('SELECT SLEEP(0.3)').catch(() => {})
    settled = outcome(request.db.transaction(async (trx) => trx('names').insert({ name: 'waited' })))
    return 'ok'
  })
  app.get('/rolled-back-by-plugin', async (request) => {
    let inserted: () => void = () => {}
    const first = new Promise<void>((resolve) => { inserted = resolve })
    settled = outcome(request.db.transaction(async (trx) => {
      await trx('names').insert({ name: 'first' })
      inserted()
      // Still running when the handler replies: the plugin rolls it back at the response's end.
      await new Promise((resolve) => setTimeout(resolve, 200))
      await trx('names').insert({ name: 'second' })
    }))
    await first
    return 'replied without waiting'
  })
  app.get('/slow-stream', async (request, reply) => reply.type('application/x-ndjson').send(request.db.raw('SELECT SLEEP(5) AS slow_stream').stream()))
  await app.ready()
  await app.db.schema.createTable('names', (table) => { table.string('name', 40).primary() })
  await app.listen({ port: 0, host: '127.0.0.1' })
})
afterEach(async () => { await app.close() })

async function names (): Promise<string[]> {
  return app.db('names').orderBy('name').pluck('name')
}

test('refuses a transaction begun after the response has ended, and logs it', async () => {
  expect((await request(app, '/begin-after-response')).status).toBe(200)
  const error = await settled
  expect((error as { code?: string }).code).toBe('FST_FORK_SAFE_DB_TRANSACTION_AFTER_RESPONSE')
  expect(await names()).toEqual([])
  expect(logged.lines().some((line) => line.msg === 'a transaction was begun on request.db after the response had ended; refused' && line.route === 'GET /begin-after-response')).toBe(true)
})

test('refuses a transaction whose BEGIN waited for a connection until after the response', async () => {
  expect((await request(app, '/begin-waits-past-response')).status).toBe(200)
  const error = await settled
  expect((error as { code?: string }).code).toBe('FST_FORK_SAFE_DB_TRANSACTION_AFTER_RESPONSE')
  expect(await names()).toEqual([])
})

test('rejects a callback-form transaction the plugin rolled back, saying why', async () => {
  expect((await request(app, '/rolled-back-by-plugin')).status).toBe(200)
  const error = await settled as Error & { code?: string }
  expect(error.code).toBe('FST_FORK_SAFE_DB_TRANSACTION_ROLLED_BACK')
  expect(error.message).toContain('the response ended while it was still open')
  expect(await names()).toEqual([])
})

test('cancels a streamed statement on the server when the client hangs up', async () => {
  await hangUpWhen(app, '/slow-stream', async () => fixture.database.statementStarted(fixture.user.user, 'slow_stream'))
  expect(await fixture.database.stillRunningAfter(fixture.user.user, 'slow_stream', STATEMENT_GONE_WITHIN_MILLIS)).toBe(false)
  expect(logged.lines().some((line) => line.msg === 'client disconnected mid-request: cancelled its running queries' && line.cancelledQueries === 1)).toBe(true)
  // The pool serves the next request.
  expect((await request(app, '/begin-after-response')).status).toBe(200)
})
