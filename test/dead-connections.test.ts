import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { TcpProxy } from '../support/tcp-proxy'

const fixture = perTestUser()

let app: FastifyInstance

beforeEach(async () => {
  app = buildApp().app
  app.get('/whoami', async (request) => {
    const [rows] = await request.db.raw('SELECT CONNECTION_ID() AS id')
    return { id: Number(rows[0].id) }
  })
})
afterEach(async () => { await app.close() })

/** Warms `count` connections, KILLs them all on the server, and fires a burst of 20 requests at once. */
async function killWarmConnectionsThenBurst (count: number) {
  await app.ready()
  const killed = await fixture.database.connectionIds(fixture.user.user)
  expect(killed).toHaveLength(count)
  for (const id of killed) await fixture.database.kill(id)
  const responses = await Promise.all(Array.from({ length: 20 }, () => app.inject('/whoami')))
  expect(responses.map((response) => response.statusCode)).toEqual(Array(20).fill(200))
  return { killed, responses }
}

test('never hands a connection killed by the server to a handler', async () => {
  // pingAfterIdleMillis: 0 sends every borrow through a COM_PING round trip, not the socket check.
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 3, max: 3 }, pingAfterIdleMillis: 0, maxPendingAcquires: 20 })
  const { killed, responses } = await killWarmConnectionsThenBurst(3)
  const used = new Set(responses.map((response) => response.json().id as number))
  for (const id of killed) expect(used.has(id)).toBe(false)
  expect(await fixture.database.settledCount(fixture.user.user, 3)).toBe(3)
})

test('replaces connections the server killed without a ping, by checking their sockets before use', async () => {
  // checkAfterIdleMillis: 0 sends every borrow through the socket check; the ping is out of reach.
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 3, max: 3 }, checkAfterIdleMillis: 0, pingAfterIdleMillis: 3_600_000, maxPendingAcquires: 20 })
  const { killed, responses } = await killWarmConnectionsThenBurst(3)
  const used = new Set(responses.map((response) => response.json().id as number))
  for (const id of killed) expect(used.has(id)).toBe(false)
})

test('closes the socket of a connection whose ping went unanswered instead of leaving it half-open', async () => {
  const proxy = await TcpProxy.start({ target: { host: fixture.user.connection.host, port: fixture.user.connection.port } })
  try {
    await app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), pool: { min: 1, max: 1, acquireTimeoutMillis: 300 }, pingAfterIdleMillis: 0 })
    await app.ready()
    expect(proxy.openConnections).toBe(1)
    // The database stops answering in time: the borrow-time ping (timeout 150 ms, half the
    // acquire deadline) goes unanswered; the replacement cannot connect within the deadline either.
    proxy.delayMillis = 5000
    const response = await app.inject('/whoami')
    expect(response.json()).toMatchObject({ statusCode: 503, code: 'FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT' })
    expect(proxy.accepted).toBe(2)
    expect(proxy.closed).toBe(1)
  } finally {
    // The proxy first: it fails the replacement connect still crawling through the delay.
    await proxy.close()
    await app.close()
  }
})

test('hands out no connection the server killed while idle, with default settings', async () => {
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 5, max: 5 } })
  await killWarmConnectionsThenBurst(5)
})

test('fails exactly the request whose connection is killed mid-query, with a code, and serves the next 100', async () => {
  app.get('/slow', async (request) => request.db.raw('SELECT SLEEP(5) AS doomed'))
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 2, max: 2 } })
  await app.ready()
  const doomed = app.inject('/slow')
  let victim: number | undefined
  while (victim === undefined) {
    victim = (await fixture.database.processes(fixture.user.user)).find((process) => process.info?.includes('doomed') === true)?.id
  }
  await fixture.database.kill(victim)

  const response = await doomed
  expect(response.statusCode).toBe(503)
  expect(response.json().code).toBe('FST_FORK_SAFE_DB_CONNECTION_LOST')
  const next = []
  for (let i = 0; i < 100; i++) next.push((await app.inject('/whoami')).statusCode)
  expect(next).toEqual(Array(100).fill(200))
})
