import type { FastifyInstance } from 'fastify'
import { createConnection, type RowDataPacket } from 'mysql2/promise'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { PrivateServer } from '../support/private-server'
import { TcpProxy } from '../support/tcp-proxy'

// The database goes away and comes back: a private server (never the machine's shared one),
// restarted or crashed with SIGKILL, reached through a proxy that counts connect attempts.

const DOWN_MILLIS = 5000

let server: PrivateServer
let proxy: TcpProxy
let app: FastifyInstance

beforeAll(async () => {
  server = await PrivateServer.start()
  const admin = await createConnection({ uri: server.url })
  await admin.query('CREATE TABLE events (id INT AUTO_INCREMENT PRIMARY KEY, request INT NOT NULL)')
  await admin.end()
})
afterAll(async () => { await server.destroy() })
beforeEach(async () => {
  proxy = await TcpProxy.start({ target: { host: '127.0.0.1', port: server.port } })
  app = buildApp().app
  await app.register(forkSafeDb, { connection: proxy.urlFor(server.url), pool: { min: 2, max: 4 }, maxPendingAcquires: 20 })
  app.post<{ Body: { request: number } }>('/events', async (request) => {
    const [id] = await request.db('events').insert({ request: request.body.request })
    return { id }
  })
  app.get('/ping', async (request) => request.db.raw('SELECT 1'))
})
afterEach(async () => {
  await app.close()
  await proxy.close()
})

test('serves every request after a server restart with an idle pool', async () => {
  await app.ready()
  await server.stop()
  await server.restart()
  const responses = await Promise.all(Array.from({ length: 20 }, () => app.inject('/ping')))
  expect(responses.map((response) => response.statusCode)).toEqual(Array(20).fill(200))
})

test('fails fast while the server is down, holds connect attempts back, keeps every acknowledged write, and recovers by itself', async () => {
  await app.ready()
  interface Answer { sentAt: number, tookMillis: number, status: number, code?: string, id?: number }
  const answers: Answer[] = []
  const writing = { on: true }
  const writer = (async () => {
    for (let request = 0; writing.on; request++) {
      const sentAt = performance.now()
      const response = await app.inject({ method: 'POST', url: '/events', payload: { request } })
      const body = response.json<{ id?: number, code?: string }>()
      answers.push({ sentAt, tookMillis: performance.now() - sentAt, status: response.statusCode, code: body.code, id: body.id })
      // Yield to I/O between requests, as a real client's round trip would.
      await new Promise((resolve) => setImmediate(resolve))
    }
  })()
  const acknowledged = () => answers.filter((answer) => answer.status === 200)

  while (acknowledged().length < 50) await new Promise((resolve) => setTimeout(resolve, 10))
  const crashAt = performance.now()
  await server.signal('SIGKILL')
  const attemptsBefore = proxy.accepted
  await new Promise((resolve) => setTimeout(resolve, DOWN_MILLIS))
  const attemptsWhileDown = proxy.accepted - attemptsBefore
  await server.restart()
  const backAt = performance.now()
  const firstSuccessAfterBack = () => answers.find((answer) => answer.sentAt >= backAt && answer.status === 200)
  while (firstSuccessAfterBack() === undefined && performance.now() - backAt < 10_000) await new Promise((resolve) => setTimeout(resolve, 10))
  writing.on = false
  await writer

  // At most 10 connect attempts a second while down.
  expect(attemptsWhileDown).toBeLessThanOrEqual(10 * DOWN_MILLIS / 1000)
  // Requests sent while down fail fast, with a code, not after the 5 s acquire timeout.
  const whileDown = answers.filter((answer) => answer.sentAt > crashAt && answer.sentAt < backAt)
  expect(whileDown.length).toBeGreaterThan(0)
  const failedWhileDown = whileDown.filter((answer) => answer.status !== 200)
  expect(Math.max(...failedWhileDown.map((answer) => answer.tookMillis))).toBeLessThan(1000)
  // The breaker answers them, except requests that borrowed a pooled connection before news of
  // its death arrived (at most one per connection: each is then discarded).
  const lostConnections = failedWhileDown.filter((answer) => answer.code !== 'FST_FORK_SAFE_DB_UNAVAILABLE')
  expect(lostConnections.length).toBeLessThanOrEqual(4)
  // (and the one connect that found the server gone: refused, or reset during its handshake).
  for (const answer of lostConnections) expect(answer.code).toMatch(/^FST_FORK_SAFE_DB_(CONNECTION_LOST|CONNECT_REFUSED)$/)
  expect(failedWhileDown.length - lostConnections.length).toBeGreaterThan(0)
  // Only a request already in flight at the crash may fail otherwise.
  expect(answers.filter((answer) => answer.sentAt < crashAt && answer.status !== 200).length).toBeLessThanOrEqual(1)
  // Back within 500 ms of the server accepting connections again.
  expect((firstSuccessAfterBack()?.sentAt ?? Infinity) - backAt).toBeLessThanOrEqual(500)

  const admin = await createConnection({ uri: server.url })
  const [rows] = await admin.query<RowDataPacket[]>('SELECT id FROM events')
  await admin.end()
  const stored = new Set(rows.map((row) => Number(row.id)))
  expect(acknowledged().filter((answer) => !stored.has(answer.id ?? -1))).toEqual([])
})
