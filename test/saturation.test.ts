import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// A full pool fails fast and clearly: 200 concurrent slow requests against pool.max = 5.

const fixture = perTestUser()
const ACQUIRE_TIMEOUT_MILLIS = 2000

let app: FastifyInstance

beforeEach(async () => {
  app = buildApp().app
  await app.register(forkSafeDb, {
    connection: fixture.user.url,
    pool: { min: 5, max: 5, acquireTimeoutMillis: ACQUIRE_TIMEOUT_MILLIS }
  })
  app.get('/slow', async (request) => {
    await request.db.raw('SELECT SLEEP(0.6)')
    return 'done'
  })
})
afterEach(async () => { await app.close() })

test('rejects what cannot queue at once, times out the queue on time, and never exceeds pool.max on the server', async () => {
  await app.ready()
  let peak = 0
  const sampling = { on: true }
  const sampler = (async () => {
    while (sampling.on) peak = Math.max(peak, await fixture.database.countConnections(fixture.user.user))
  })()

  const started = performance.now()
  const responses = await Promise.all(Array.from({ length: 200 }, async () => {
    const sent = performance.now()
    const response = await app.inject('/slow')
    const answered = performance.now()
    // `at`: since the burst began (for ordering); `took`: this request's own wait.
    return { response, at: answered - started, took: answered - sent }
  }))
  sampling.on = false
  await sampler

  const byCode = (code: string) => responses.filter(({ response }) => response.statusCode === 503 && response.json<{ code?: string }>().code === code)
  const saturated = byCode('FST_FORK_SAFE_DB_POOL_SATURATED')
  const timedOut = byCode('FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT')
  const served = responses.filter(({ response }) => response.statusCode === 200)

  // 5 run, 4 x 5 = 20 wait, 175 are turned away before any query has finished.
  expect(saturated).toHaveLength(175)
  const firstServed = Math.min(...served.map(({ at }) => at))
  for (const { response, at } of saturated) {
    expect(response.statusCode).toBe(503)
    expect(response.headers['retry-after']).toBe('1')
    expect(at).toBeLessThan(firstServed)
  }
  // Of the 20 waiting, those still waiting when the timeout fires are answered by it (their code
  // says so), not by a connection freed later. The upper bound only catches a timer that never
  // fires: this machine is shared, so a tight figure here would measure the weather.
  expect(served.length + timedOut.length).toBe(25)
  expect(timedOut.length).toBeGreaterThan(0)
  for (const { response, took } of timedOut) {
    expect(response.statusCode).toBe(503)
    expect(response.headers['retry-after']).toBe('1')
    expect(took).toBeGreaterThanOrEqual(ACQUIRE_TIMEOUT_MILLIS)
    expect(took).toBeLessThan(ACQUIRE_TIMEOUT_MILLIS * 1.5)
  }
  expect(peak).toBeLessThanOrEqual(5)
  const pool = app.db.client.pool
  expect({ used: pool.numUsed(), pendingAcquires: pool.numPendingAcquires(), pendingCreates: pool.numPendingCreates() })
    .toEqual({ used: 0, pendingAcquires: 0, pendingCreates: 0 })
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(5)
})
