import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// A slow query must never hold a connection, or keep running on the server, after its caller
// gave up: the default query timeout cancels it server-side.

const fixture = perTestUser()
const QUERY_TIMEOUT_MILLIS = 300
const STATEMENT_GONE_WITHIN_MILLIS = 500

let app: FastifyInstance

beforeEach(async () => {
  app = buildApp().app
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 1 }, queryTimeoutMillis: QUERY_TIMEOUT_MILLIS })
  app.get('/slow', async (request) => request.db.raw('SELECT SLEEP(5) AS slow_statement'))
  app.get('/fast', async (request) => request.db.raw('SELECT 1 AS fast'))
})
afterEach(async () => { await app.close() })

/** Whether our statement is still running on the server, polled until `withinMillis` has passed. */
async function stillRunningAfter (withinMillis: number): Promise<boolean> {
  const deadline = performance.now() + withinMillis
  for (;;) {
    const running = (await fixture.database.processes(fixture.user.user)).some((process) => process.info?.includes('slow_statement') === true)
    if (!running || performance.now() > deadline) return running
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

test('cancels a timed-out statement on the server, three times in a row on a pool of one', async () => {
  for (let attempt = 0; attempt < 3; attempt++) {
    const response = await app.inject('/slow')
    expect(response.statusCode).toBe(503)
    expect(response.json()).toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })
    expect(await stillRunningAfter(STATEMENT_GONE_WITHIN_MILLIS)).toBe(false)
    // The pool's one connection is usable again at once.
    expect((await app.inject('/fast')).statusCode).toBe(200)
  }
  // pool.max, plus at most the short-lived connection that sent KILL QUERY.
  expect(await fixture.database.settledCount(fixture.user.user, 1)).toBe(1)
})

test('lets a query set a longer timeout of its own', async () => {
  app.get('/patient', async (request) => request.db.raw('SELECT SLEEP(0.5) AS patient').timeout(2000, { cancel: true }))
  expect((await app.inject('/patient')).statusCode).toBe(200)
})
