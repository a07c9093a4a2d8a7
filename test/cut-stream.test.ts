import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { TcpProxy } from '../support/tcp-proxy'

// A large result cut off mid-stream must reach the handler as an error, never as a truncated
// success, and must not leak the connection.

const fixture = perTestUser()
// 10,000 rows of ~200 bytes (~2 MB) without recursion (MySQL caps recursive CTEs at 1000 rows).
const LARGE_RESULT = `WITH d(n) AS (SELECT 0 UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
  UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)
  SELECT a.n + 10 * b.n + 100 * c.n + 1000 * e.n AS n, REPEAT('x', 200) AS filler FROM d a, d b, d c, d e`

let app: FastifyInstance
let proxy: TcpProxy

beforeEach(async () => {
  proxy = await TcpProxy.start({ target: { host: fixture.user.connection.host, port: fixture.user.connection.port } })
  app = buildApp().app
  app.get('/large', async (request) => {
    const [rows] = await request.db.raw(LARGE_RESULT)
    return { rows: rows.length }
  })
  await app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), pool: { min: 1, max: 2 } })
})
afterEach(async () => {
  await app.close()
  await proxy.close()
})

test('serves the whole large result when nothing cuts it', async () => {
  await app.ready()
  expect((await app.inject('/large')).json()).toEqual({ rows: 10_000 })
})

test.each(['fin', 'rst'] as const)('fails the handler, never half-succeeds, when the result is cut with %s, and releases the connection', async (how) => {
  // Every connection through the proxy is cut once 300 kB have come back from the server.
  proxy.cut = { afterBytes: 300_000, how }
  await app.ready()
  const response = await app.inject('/large')
  expect(response.statusCode).toBe(503)
  expect(response.json().code).toBe('FST_FORK_SAFE_DB_CONNECTION_LOST')
  expect(app.db.client.pool.numUsed()).toBe(0)

  proxy.cut = undefined
  expect((await app.inject('/large')).json()).toEqual({ rows: 10_000 })
})
