import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { PrivateServer } from '../support/private-server'
import { TcpProxy } from '../support/tcp-proxy'

// Shutdown against a database that stops answering mid-query: a private server that the test
// freezes with SIGSTOP (never the machine's shared one), reached through a proxy that counts
// every connection the app opens.

const CLOSE_TIMEOUT_MILLIS = 1000

let server: PrivateServer
let admin: Connection
let proxy: TcpProxy
let app: FastifyInstance | undefined

beforeAll(async () => {
  server = await PrivateServer.start()
  admin = await createConnection({ uri: server.url })
})
afterAll(async () => {
  await server.signal('SIGCONT')
  await admin.end()
  await server.destroy()
})
beforeEach(async () => {
  proxy = await TcpProxy.start({ target: { host: '127.0.0.1', port: server.port } })
})
afterEach(async () => {
  await server.signal('SIGCONT')
  await app?.close()
  app = undefined
  await proxy.close()
})

function get (port: number, path: string): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    httpRequest({ host: '127.0.0.1', port, path, agent: false }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { body += chunk })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }))
    }).on('error', reject).end()
  })
}

async function queryIsRunning (text: string): Promise<boolean> {
  const [rows] = await admin.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND INFO LIKE ?', [`%${text}%`])
  return Number(rows[0].n) > 0
}

/** Listens, sends GET `path`, and resolves (with the pending response) once its statement `marker` runs. */
async function requestRunning (instance: FastifyInstance, path: string, marker: string): Promise<{ response: Promise<{ status: number, body: string }> }> {
  await instance.listen({ port: 0, host: '127.0.0.1' })
  const response = get((instance.server.address() as AddressInfo).port, path)
  while (!(await queryIsRunning(marker))) await new Promise((resolve) => setImmediate(resolve))
  return { response }
}

/** Closes `instance`; resolves with how long that took. */
async function timedClose (instance: FastifyInstance): Promise<number> {
  const started = performance.now()
  await instance.close()
  app = undefined
  return performance.now() - started
}

test('close() finishes within closeTimeoutMillis when the database freezes mid-query, answering the stuck request with a coded 503', async () => {
  app = buildApp().app
  await app.register(forkSafeDb, { connection: proxy.urlFor(server.url), pool: { min: 2, max: 2 }, closeTimeoutMillis: CLOSE_TIMEOUT_MILLIS })
  app.get('/slow', async (request) => {
    await request.db.raw('SELECT SLEEP(5) AS stuck')
    return 'finished'
  })
  const { response } = await requestRunning(app, '/slow', 'SLEEP(5) AS stuck')
  await server.signal('SIGSTOP')

  const connectionsBefore = proxy.accepted
  const elapsed = await timedClose(app)

  expect(elapsed).toBeGreaterThanOrEqual(CLOSE_TIMEOUT_MILLIS - 50)
  expect(elapsed).toBeLessThan(CLOSE_TIMEOUT_MILLIS + 1000)
  const answered = await response
  expect(answered.status).toBe(503)
  expect(JSON.parse(answered.body)).toMatchObject({ code: 'FST_FORK_SAFE_DB_CLOSE_TIMEOUT', message: expect.stringMatching(/^fastify-fork-safe-db: the "db" pool was torn down/) })
  // No connection was opened once close() had begun.
  expect(proxy.accepted).toBe(connectionsBefore)
})

test('close() keeps closeTimeoutMillis when the database freezes mid-statement inside a { db: { transaction: true } } route', async () => {
  app = buildApp().app
  await app.register(forkSafeDb, { connection: proxy.urlFor(server.url), pool: { min: 2, max: 2 }, closeTimeoutMillis: CLOSE_TIMEOUT_MILLIS })
  app.get('/slow-in-route', { db: { transaction: true } }, async (request) => {
    await request.db.raw('SELECT SLEEP(5) AS stuck_in_route')
    return 'finished'
  })
  const { response } = await requestRunning(app, '/slow-in-route', 'SLEEP(5) AS stuck_in_route')
  await server.signal('SIGSTOP')

  expect(await timedClose(app)).toBeLessThan(CLOSE_TIMEOUT_MILLIS + 1000)
  expect((await response).status).toBe(503)
})

test('a statement cancelled while the pool is closing is still stopped on the server', async () => {
  app = buildApp().app
  // The query times out after close() began: its KILL needs a new connection all the same.
  await app.register(forkSafeDb, { connection: proxy.urlFor(server.url), pool: { min: 1, max: 1 }, queryTimeoutMillis: 300, closeTimeoutMillis: 10_000 })
  app.get('/slow', async (request) => request.db.raw('SELECT SLEEP(3) AS cancelled_while_closing'))
  const { response } = await requestRunning(app, '/slow', 'SLEEP(3) AS cancelled_while_closing')
  const closed = app.close()
  app = undefined
  expect((await response).status).toBe(503)
  // Polled: the KILL runs in the background, after the caller was answered.
  const deadline = performance.now() + 1000
  let running = await queryIsRunning('SLEEP(3) AS cancelled_while_closing')
  while (running && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    running = await queryIsRunning('SLEEP(3) AS cancelled_while_closing')
  }
  expect(running).toBe(false)
  await closed
})

test('close() of an idle pool does not wait for the deadline', async () => {
  app = buildApp().app
  await app.register(forkSafeDb, { connection: proxy.urlFor(server.url), closeTimeoutMillis: 60_000 })
  await app.ready()
  await app.close()
  app = undefined
  // Jest's own exit check proves the 60 s deadline timer did not outlive close().
  expect(proxy.accepted).toBe(2)
})
