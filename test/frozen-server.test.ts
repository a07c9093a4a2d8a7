import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { PrivateServer } from '../support/private-server'
import { TcpProxy } from '../support/tcp-proxy'

// A database that stops answering without closing anything: a private server frozen with
// SIGSTOP, and a proxy that swallows new connections. No request may wait longer than the
// acquire timeout plus the query timeout, close() keeps its deadline, and the pool recovers.
// (close() against a server frozen mid-query: shutdown.test.ts.)

const ACQUIRE_TIMEOUT_MILLIS = 800
const QUERY_TIMEOUT_MILLIS = 800
const CLOSE_TIMEOUT_MILLIS = 800
// Room for a busy, shared machine: the alternative these bounds rule out is waiting for ever.
const SLACK_MILLIS = 1000

let server: PrivateServer
let app: FastifyInstance | undefined

beforeAll(async () => { server = await PrivateServer.start() })
afterAll(async () => { await server.destroy() })
afterEach(async () => {
  await server.signal('SIGCONT')
  await app?.close()
  app = undefined
})

async function register (connection: string, pool: { min: number, max: number }): Promise<FastifyInstance> {
  app = buildApp().app
  await app.register(forkSafeDb, {
    connection,
    pool: { ...pool, acquireTimeoutMillis: ACQUIRE_TIMEOUT_MILLIS },
    queryTimeoutMillis: QUERY_TIMEOUT_MILLIS,
    closeTimeoutMillis: CLOSE_TIMEOUT_MILLIS
  })
  app.get('/ping', async (request) => request.db.raw('SELECT 1 AS ok'))
  app.get('/ping-in-route', { db: { transaction: true } }, async (request) => request.db.raw('SELECT 1 AS ok'))
  app.get('/ping-in-transaction', async (request) => request.db.transaction(async (trx) => trx.raw('SELECT 1 AS ok')))
  return app
}

async function timed (instance: FastifyInstance, count: number, path = '/ping'): Promise<Array<{ status: number, code?: string, took: number }>> {
  return Promise.all(Array.from({ length: count }, async () => {
    const sent = performance.now()
    const response = await instance.inject(path)
    return { status: response.statusCode, code: response.json<{ code?: string }>().code, took: performance.now() - sent }
  }))
}

test('answers every request within acquire + query timeout while the server is frozen, then recovers after SIGCONT', async () => {
  const instance = await register(server.url, { min: 2, max: 2 })
  await instance.ready()
  await server.signal('SIGSTOP')

  const frozen = await timed(instance, 6)
  for (const answer of frozen) {
    expect(answer.status).toBe(503)
    expect(answer.took).toBeLessThan(ACQUIRE_TIMEOUT_MILLIS + QUERY_TIMEOUT_MILLIS + SLACK_MILLIS)
  }
  expect(new Set(frozen.map((answer) => answer.code))).toEqual(new Set(['FST_FORK_SAFE_DB_QUERY_TIMEOUT', 'FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT']))

  await server.signal('SIGCONT')
  let recovered = await timed(instance, 1)
  while (recovered[0].status !== 200) recovered = await timed(instance, 1)
  expect((await timed(instance, 4)).map((answer) => answer.status)).toEqual([200, 200, 200, 200])
})

test.each([
  ['a { db: { transaction: true } } route', '/ping-in-route'],
  ['request.db.transaction()', '/ping-in-transaction']
])('answers every request in %s within acquire + query timeout while the server is frozen, then recovers', async (_where, path) => {
  const instance = await register(server.url, { min: 2, max: 2 })
  await instance.ready()
  await server.signal('SIGSTOP')

  // BEGIN and COMMIT are statements too: a frozen server must not hold them forever.
  for (const answer of await timed(instance, 4, path)) {
    expect(answer.status).toBe(503)
    expect(answer.took).toBeLessThan(ACQUIRE_TIMEOUT_MILLIS + QUERY_TIMEOUT_MILLIS + SLACK_MILLIS)
  }

  await server.signal('SIGCONT')
  let recovered = await timed(instance, 1, path)
  while (recovered[0].status !== 200) recovered = await timed(instance, 1, path)
  expect((await timed(instance, 4, path)).map((answer) => answer.status)).toEqual([200, 200, 200, 200])
})

test('answers within the acquire timeout when new connections go into a black hole', async () => {
  const proxy = await TcpProxy.start({ target: { host: '127.0.0.1', port: server.port } })
  try {
    proxy.blackhole = true
    const instance = await register(proxy.urlFor(server.url), { min: 0, max: 2 })
    await instance.ready()
    const answers = await timed(instance, 4)
    for (const answer of answers) {
      expect(answer).toMatchObject({ status: 503 })
      expect(answer.took).toBeLessThan(ACQUIRE_TIMEOUT_MILLIS + SLACK_MILLIS)
    }
    // close() keeps its deadline, though a connect into the black hole is still pending.
    const started = performance.now()
    await instance.close()
    app = undefined
    expect(performance.now() - started).toBeLessThan(CLOSE_TIMEOUT_MILLIS + SLACK_MILLIS)
  } finally {
    await app?.close()
    app = undefined
    await proxy.close()
  }
})
