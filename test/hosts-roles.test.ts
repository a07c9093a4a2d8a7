import { setTimeout as delay } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { TestDatabase, type TestUser } from './helpers/database'
import { request } from './helpers/http-client'
import { PrivateServer } from '../support/private-server'

// Two real servers as two hosts: a private server (whose role a test may change: SET GLOBAL
// read_only on it only) listed first, the shared server second.

let server: PrivateServer
let admin: Connection
let database: TestDatabase
let user: TestUser
let app: FastifyInstance

beforeAll(async () => {
  server = await PrivateServer.start()
  admin = await createConnection({ uri: server.url })
  database = await TestDatabase.open()
})
afterAll(async () => {
  await admin.end()
  await server.destroy()
  await database.close()
})
beforeEach(async () => { user = await database.createUser() })
afterEach(async () => {
  await app?.close()
  await admin.query('SET GLOBAL read_only = 0')
  expect(await database.settledCount(user.user, 0)).toBe(0)
})

const privateLabel = (): string => `127.0.0.1:${server.port}`

async function start (options: { role?: 'primary' | 'any', queryTimeoutMillis?: number }): Promise<FastifyInstance> {
  app = buildApp().app
  await app.register(forkSafeDb, { connection: [server.url, user.url], pool: { min: 1, max: 2 }, ...options })
  app.get('/write', async (req) => {
    await req.db.raw('CREATE TEMPORARY TABLE t (id INT)')
    return { ok: true }
  })
  app.get('/sleep', async (req) => req.db.raw('SELECT SLEEP(30) AS marker_of_the_kill_test'))
  await app.listen({ port: 0, host: '127.0.0.1' })
  return app
}

async function sleepingOnPrivateServer (): Promise<number> {
  const [rows] = await admin.query<RowDataPacket[]>('SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE INFO LIKE \'%marker_of_the_kill_test%\' AND INFO NOT LIKE \'%PROCESSLIST%\'')
  return Number(rows[0].n)
}

test('skips a read-only server at connect with role primary, and says so in stats().hosts', async () => {
  await admin.query('SET GLOBAL read_only = 1')
  await start({ role: 'primary' })
  const [readOnly, writable] = app.dbPool.stats().hosts
  expect(readOnly).toMatchObject({ host: privateLabel(), state: 'read-only', connections: 0 })
  expect(writable).toMatchObject({ state: 'up', connections: 1 })
  expect((await request(app, '/write')).status).toBe(200)
})

test('uses a read-only server first with role any', async () => {
  await admin.query('SET GLOBAL read_only = 1')
  await start({ role: 'any' })
  expect(app.dbPool.stats().hosts.map((host) => [host.state, host.connections])).toEqual([['up', 1], ['up', 0]])
})

test('sends the KILL of a timed-out statement to the server the statement runs on', async () => {
  await start({ queryTimeoutMillis: 300 })
  expect(app.dbPool.stats().hosts[0].connections).toBe(1)
  const response = await request(app, '/sleep')
  expect(JSON.parse(response.body)).toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })
  // Killed on the private server: the 30 s statement is gone long before it would end.
  const deadline = performance.now() + 10_000
  while (await sleepingOnPrivateServer() > 0 && performance.now() < deadline) await delay(20)
  expect(await sleepingOnPrivateServer()).toBe(0)
  expect(app.dbPool.stats().hosts[0].state).toBe('up')
})
