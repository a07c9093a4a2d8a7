import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { TcpProxy } from '../support/tcp-proxy'

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

test('cancels a timed-out statement on the server, three times in a row on a pool of one', async () => {
  for (let attempt = 0; attempt < 3; attempt++) {
    const response = await app.inject('/slow')
    expect(response.statusCode).toBe(503)
    expect(response.json()).toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })
    expect(await fixture.database.stillRunningAfter(fixture.user.user, 'slow_statement', STATEMENT_GONE_WITHIN_MILLIS)).toBe(false)
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

test('a KILL that gives up on a connection knex has already let go of does not crash the process', async () => {
  const target = new URL(fixture.user.url)
  const proxy = await TcpProxy.start({ target: { host: target.hostname, port: Number(target.port) } })
  const logged = buildApp()
  try {
    // The cancel's own deadline is half the acquire timeout: 200 ms.
    await logged.app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), pool: { min: 1, max: 1, acquireTimeoutMillis: 400 } })
    await logged.app.ready()
    // The KILL's connection goes into a black hole, so the cancel gives up and closes the socket.
    proxy.blackhole = true
    const { client } = logged.app.db
    const connection = await client.acquireConnection()
    // What knex does to a connection it has closed: no 'error' listener is left.
    connection.removeAllListeners()
    const closed = new Promise((resolve) => connection.stream.once('close', resolve))
    await client.cancelQuery(connection)
    await closed
    expect(logged.lines().some((line) => line.msg === 'KILL QUERY did not complete in time; closing the connection')).toBe(true)
    await client.releaseConnection(connection)
  } finally {
    await logged.app.close()
    await proxy.close()
  }
})
