import { request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'

const fixture = perTestUser()

let app: FastifyInstance | undefined

afterEach(async () => {
  await app?.close()
  app = undefined
})

async function register (options: Record<string, unknown> = {}): Promise<FastifyInstance> {
  app = buildApp().app
  await app.register(forkSafeDb, { connection: fixture.user.url, ...options })
  return app
}

function getText (port: number, path: string): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest({ host: '127.0.0.1', port, path, agent: false }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => { body += chunk })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body }))
    })
    request.on('error', reject)
    request.end()
  })
}

test('opens no connection at registration, nor when the decorator is first read', async () => {
  const instance = await register()
  await instance.after()
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(0)
  expect(typeof instance.db).toBe('function')
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(0)
})

test('has exactly pool.min connections open when ready() resolves', async () => {
  const instance = await register({ pool: { min: 3, max: 5 } })
  await instance.ready()
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(3)
})

test('warms the default pool.min of 2 connections', async () => {
  const instance = await register()
  await instance.ready()
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(2)
})

test('warms the number of connections given as warmup', async () => {
  const instance = await register({ pool: { min: 1, max: 6 }, warmup: 4 })
  await instance.ready()
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(4)
})

test('keeps a warmup: false pool at zero connections until the first query', async () => {
  const instance = await register({ warmup: false })
  await instance.ready()
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(0)
  await instance.db.raw('SELECT 1')
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(1)
})

test('never opens more than pool.max connections under concurrent requests', async () => {
  const instance = await register({ pool: { min: 0, max: 3 }, warmup: false, maxPendingAcquires: 20 })
  let peak = 0
  instance.get('/slow', async (request) => {
    const [rows] = await request.db.raw('SELECT CONNECTION_ID() AS id, SLEEP(0.05) AS slept')
    peak = Math.max(peak, await fixture.database.countConnections(fixture.user.user))
    return { id: rows[0].id }
  })
  await instance.ready()
  const responses = await Promise.all(Array.from({ length: 20 }, () => instance.inject('/slow')))
  expect(responses.map((response) => response.statusCode)).toEqual(Array(20).fill(200))
  const ids = new Set(responses.map((response) => response.json().id))
  expect(ids.size).toBe(3)
  expect(peak).toBe(3)
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(3)
})

test('leaves no connection on the server after close()', async () => {
  const instance = await register({ pool: { min: 4, max: 4 } })
  await instance.ready()
  await Promise.all(Array.from({ length: 8 }, () => instance.db.raw('SELECT SLEEP(0.01)')))
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(4)
  await instance.close()
  app = undefined
  expect(await fixture.database.settledCount(fixture.user.user, 0)).toBe(0)
})

test('lets a query that is running when close() is called finish normally', async () => {
  const instance = await register({ pool: { min: 1, max: 2 } })
  instance.get('/report', async (request) => {
    const [rows] = await request.db.raw('SELECT SLEEP(0.4) AS slept, ? AS status', ['finished'])
    return rows[0].status
  })
  await instance.listen({ port: 0, host: '127.0.0.1' })
  const { port } = instance.server.address() as AddressInfo
  const response = getText(port, '/report')
  // Close only once the server is running our statement.
  while (!(await fixture.database.processes(fixture.user.user)).some((process) => process.info?.includes('SLEEP(0.4)') === true)) {
    await new Promise((resolve) => setImmediate(resolve))
  }
  const closed = instance.close()
  app = undefined
  await expect(response).resolves.toEqual({ status: 200, body: 'finished' })
  await closed
  expect(await fixture.database.settledCount(fixture.user.user, 0)).toBe(0)
})

test('refuses to hand out the pool after close()', async () => {
  const instance = await register()
  await instance.ready()
  await instance.close()
  app = undefined
  expect(() => instance.db).toThrow(expect.objectContaining({ code: 'FST_FORK_SAFE_DB_CLOSED' }))
})

test('takes pool: { max: 1 } alone as a pool of one', async () => {
  const instance = await register({ pool: { max: 1 } })
  await instance.ready()
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(1)
})

test('still opens connections on demand with maxPendingAcquires: 0 (no waiting, not no connecting)', async () => {
  const instance = await register({ pool: { min: 0, max: 2 }, warmup: false, maxPendingAcquires: 0 })
  await instance.ready()
  await expect(instance.db.raw('SELECT 1')).resolves.toBeDefined()
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(1)
})
