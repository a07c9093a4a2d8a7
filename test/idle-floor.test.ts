import type { FastifyInstance } from 'fastify'
import { createConnection } from 'mysql2/promise'
import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { PrivateServer } from '../support/private-server'
import { TcpProxy } from '../support/tcp-proxy'

// A server that closes idle connections after 2 s (a private one: wait_timeout is global).
// The warm floor must survive quiet periods, and an event-loop stall long enough for the server
// to close connections unnoticed must not cost a handler an error.

const WAIT_TIMEOUT_SECONDS = 2

let server: PrivateServer
let proxy: TcpProxy
let logged: LoggedApp
let app: FastifyInstance

beforeAll(async () => {
  server = await PrivateServer.start()
  const admin = await createConnection({ uri: server.url })
  await admin.query(`SET GLOBAL wait_timeout = ${WAIT_TIMEOUT_SECONDS}`)
  await admin.end()
})
afterAll(async () => { await server.destroy() })
beforeEach(async () => {
  proxy = await TcpProxy.start({ target: { host: '127.0.0.1', port: server.port } })
  logged = buildApp()
  app = logged.app
  await app.register(forkSafeDb, { connection: proxy.urlFor(server.url), pool: { min: 3, max: 5 } })
  app.get('/ping', async (request) => request.db.raw('SELECT 1'))
})
afterEach(async () => {
  await app.close()
  await proxy.close()
})

function idle (millis: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, millis))
}

test('keeps the warm floor alive across a quiet period longer than wait_timeout: a burst needs no new connection', async () => {
  await app.ready()
  expect(logged.lines().find((line) => line.msg === 'connection pool warmed')).toMatchObject({ waitTimeoutSeconds: WAIT_TIMEOUT_SECONDS, keepAliveEveryMillis: 500 })
  const opened = proxy.accepted
  // Quiet for longer than the server's idle limit (the scenario itself, not a wait for an event).
  await idle(WAIT_TIMEOUT_SECONDS * 1000 + 1000)
  // A burst the warm floor can carry alone: any new connection would mean it had gone stale.
  const responses = await Promise.all(Array.from({ length: 3 }, () => app.inject('/ping')))
  expect(responses.map((response) => response.statusCode)).toEqual(Array(3).fill(200))
  expect(proxy.accepted).toBe(opened)
})

test('hands no handler a connection the server closed during a 3 s event-loop stall', async () => {
  // Straight to the server: through the in-process proxy a FIN needs two poll phases to arrive.
  const direct = buildApp().app
  await direct.register(forkSafeDb, { connection: server.url, pool: { min: 3, max: 5 } })
  direct.get('/ping', async (request) => request.db.raw('SELECT 1'))
  await direct.ready()
  // A synchronous stall: the keeper cannot run, the server closes the idle connections, and
  // their FINs wait unread until the burst below is already borrowing.
  const until = Date.now() + 3000
  while (Date.now() < until) { /* stalled */ }
  try {
    const responses = await Promise.all(Array.from({ length: 12 }, () => direct.inject('/ping')))
    expect(responses.map((response) => response.statusCode)).toEqual(Array(12).fill(200))
  } finally {
    await direct.close()
  }
})

test('replaces connections near their maximum lifetime in the background, never on a request\'s path', async () => {
  const aging = buildApp().app
  await aging.register(forkSafeDb, {
    connection: proxy.urlFor(server.url),
    pool: { min: 2, max: 2, maxConnectionLifetimeMillis: 2000, maxConnectionLifetimeJitterMillis: 0 }
  })
  aging.get('/ping', async (request) => request.db.raw('SELECT 1'))
  try {
    await aging.ready()
    // Until both warm connections have been replaced (each lives 2 s; the keeper replaces it a
    // second early), and the replacements are back in the pool.
    const replaced = () => {
      const { connections } = aging.dbPool.stats()
      return connections.created >= 4 && connections.free === 2 && connections.pendingCreates === 0
    }
    while (!replaced()) await new Promise((resolve) => setTimeout(resolve, 20))
    expect(aging.dbPool.stats().connections.destroyed).toBeGreaterThanOrEqual(2)
    const before = proxy.accepted
    const responses = await Promise.all(Array.from({ length: 2 }, () => aging.inject('/ping')))
    expect(responses.map((response) => response.statusCode)).toEqual([200, 200])
    expect(proxy.accepted).toBe(before)
  } finally {
    await aging.close()
  }
})

test('never pings a connection a request has borrowed: a keeper ping cannot cut a running query', async () => {
  // Pings take 300 ms through the proxy and time out after 400 ms; the keeper ticks every 500 ms
  // (a quarter of wait_timeout). A query borrows one connection while the keeper pings the other.
  const racing = buildApp().app
  await racing.register(forkSafeDb, { connection: proxy.urlFor(server.url), pool: { min: 2, max: 2, acquireTimeoutMillis: 800 } })
  racing.get('/slow', async (request) => request.db.raw('SELECT SLEEP(1) AS borrowed_during_keeper_ping'))
  try {
    await racing.ready()
    proxy.delayMillis = 150
    // A COM_PING packet: a 1-byte payload, command 0x0e.
    const keeperPinging = new Promise<void>((resolve) => {
      proxy.onClientData = (chunk) => { if (chunk.length === 5 && chunk[4] === 0x0e) resolve() }
    })
    await keeperPinging
    proxy.onClientData = undefined
    const response = await racing.inject('/slow')
    expect(response.statusCode).toBe(200)
  } finally {
    await racing.close()
  }
})
