import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { setTimeout as delay } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import forkSafeDb, { channels, type ForkSafeDbOptions } from '../lib'
import { buildApp } from './helpers/app'
import { TestDatabase, type TestUser } from './helpers/database'
import { request } from './helpers/http-client'
import { TcpProxy } from '../support/tcp-proxy'

// Several hosts in one registration, each a fault proxy in front of the shared server: a proxy
// refuses (a host that is down), resets (a host cut under load), or holds every byte (a frozen
// host). Which host a connection went to is told by stats().hosts and the events' `host`.

let database: TestDatabase
let user: TestUser
let proxies: TcpProxy[]
let app: FastifyInstance
let logged: () => Array<Record<string, unknown>>

beforeAll(async () => { database = await TestDatabase.open() })
afterAll(async () => { await database.close() })
beforeEach(async () => {
  user = await database.createUser()
  const target = { host: user.connection.host, port: user.connection.port }
  proxies = await Promise.all([TcpProxy.start({ target }), TcpProxy.start({ target }), TcpProxy.start({ target })])
})
afterEach(async () => {
  await app?.close()
  for (const proxy of proxies) await proxy.close()
  expect(await database.settledCount(user.user, 0)).toBe(0)
})

const urlOf = (proxy: TcpProxy): string => proxy.urlFor(user.url)
const labelOf = (proxy: TcpProxy): string => `127.0.0.1:${proxy.port}`

async function start (options: Omit<ForkSafeDbOptions, 'connection'> & { connection: ForkSafeDbOptions['connection'] }): Promise<FastifyInstance> {
  const built = buildApp()
  app = built.app
  logged = built.lines
  await app.register(forkSafeDb, options)
  app.get('/id', async (req) => {
    const [rows] = await req.db.raw('SELECT CONNECTION_ID() AS id')
    return { id: (rows as Array<{ id: number }>)[0].id }
  })
  app.get('/slow', async (req) => {
    await req.db.raw('SELECT SLEEP(0.02)')
    return { ok: true }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return app
}

/** The host label of each connection lent to a query from now on. */
function lentHosts (): { hosts: string[], stop: () => void } {
  const hosts: string[] = []
  const onAcquire = (message: unknown): void => {
    const event = message as { host?: string, internal: boolean }
    if (!event.internal && event.host !== undefined) hosts.push(event.host)
  }
  subscribe(channels.poolAcquire, onAcquire)
  return { hosts, stop: () => unsubscribe(channels.poolAcquire, onAcquire) }
}

async function until (condition: () => boolean, withinMillis = 10_000): Promise<void> {
  const deadline = performance.now() + withinMillis
  while (!condition()) {
    if (performance.now() > deadline) throw new Error('the condition did not hold in time')
    await delay(10)
  }
}

test('sends every new connection to the first host with the sequential policy', async () => {
  await start({ connection: proxies.map(urlOf), pool: { min: 2, max: 4 } })
  const responses = await Promise.all(Array.from({ length: 8 }, () => request(app, '/id')))
  expect(responses.map((response) => response.status)).toEqual(Array(8).fill(200))
  const { hosts } = app.dbPool.stats()
  expect(hosts.map((host) => host.host)).toEqual(proxies.map(labelOf))
  expect(hosts.map((host) => host.state)).toEqual(['up', 'up', 'up'])
  expect(hosts[0].connections).toBeGreaterThanOrEqual(2)
  expect([hosts[1].connections, hosts[2].connections]).toEqual([0, 0])
  expect([proxies[1].accepted, proxies[2].accepted]).toEqual([0, 0])
})

test('spreads new connections over the hosts with the random policy', async () => {
  await start({ connection: proxies.map(urlOf), hostPolicy: 'random', pool: { min: 30, max: 30 }, warmupConcurrency: 6 })
  const counts = app.dbPool.stats().hosts.map((host) => host.connections)
  expect(counts.reduce((sum, count) => sum + count, 0)).toBe(30)
  // 30 connections over 3 hosts: each gets 10 on average; fewer than 2 happens about once in 10^4 runs.
  for (const count of counts) expect(count).toBeGreaterThanOrEqual(2)
})

test('reads a URL listing several hosts like the list of them', async () => {
  const url = user.url.replace(`@${user.connection.host}:${user.connection.port}/`, `@${proxies.map(labelOf).join(',')}/`)
  await start({ connection: url, pool: { min: 1, max: 2 } })
  expect(app.dbPool.stats().hosts.map((host) => [host.host, host.connections])).toEqual([[labelOf(proxies[0]), 1], [labelOf(proxies[1]), 0], [labelOf(proxies[2]), 0]])
  expect((await request(app, '/id')).status).toBe(200)
})

test('warms up on the second host when the first refuses connections, and stats().hosts says why', async () => {
  proxies[0].refuse = true
  await start({ connection: proxies.map(urlOf), pool: { min: 2, max: 4 } })
  const [first, second] = app.dbPool.stats().hosts
  expect(first).toMatchObject({ host: labelOf(proxies[0]), state: 'down', connections: 0, inUse: 0 })
  expect(first.failures).toBeGreaterThanOrEqual(1)
  expect(second).toMatchObject({ host: labelOf(proxies[1]), state: 'up', connections: 2, failures: 0 })
  expect((await request(app, '/id')).status).toBe(200)
})

test('fails only the statements in flight on a host cut under load, then serves every request on the next host', async () => {
  await start({ connection: proxies.slice(0, 2).map(urlOf), pool: { min: 4, max: 4 }, maxPendingAcquires: 100 })
  interface Answer { sentAt: number, status: number, code?: string }
  const answers: Answer[] = []
  const load = { on: true }
  const client = async (): Promise<void> => {
    while (load.on) {
      const sentAt = performance.now()
      const response = await request(app, '/slow')
      answers.push({ sentAt, status: response.status, code: (JSON.parse(response.body) as { code?: string }).code })
    }
  }
  const clients = Array.from({ length: 4 }, client)
  await until(() => answers.length >= 40)
  const cutAt = performance.now()
  proxies[0].refuse = true
  proxies[0].resetAll()
  await until(() => answers.filter((answer) => answer.sentAt > cutAt && answer.status === 200).length >= 40)
  load.on = false
  await Promise.all(clients)

  const failed = answers.filter((answer) => answer.status !== 200)
  // At most the statements in flight (4 clients), each with a code.
  expect(failed.length).toBeLessThanOrEqual(4)
  for (const answer of failed) expect(answer.code).toMatch(/^FST_FORK_SAFE_DB_/)
  const firstSuccess = answers.find((answer) => answer.sentAt >= cutAt && answer.status === 200)
  // Every request sent after the first success on the next host succeeded.
  expect(answers.filter((answer) => answer.sentAt > (firstSuccess?.sentAt ?? 0) && answer.status !== 200)).toEqual([])
  const { hosts } = app.dbPool.stats()
  expect(hosts.map((host) => host.state)).toEqual(['down', 'up'])
  expect(hosts[0].connections).toBe(0)
  console.log(`failover after a cut host: first success ${Math.round((firstSuccess?.sentAt ?? cutAt) - cutAt)} ms after the cut; ${failed.length} statements failed (${failed.map((answer) => answer.code).join(', ')})`)
})

test('never makes a borrow wait a connect timeout once a frozen first host is out of rotation', async () => {
  const connectTimeout = 10_000
  await start({
    connection: proxies.slice(0, 2).map((proxy) => `${urlOf(proxy)}?connectTimeout=${connectTimeout}`),
    pool: { min: 2, max: 4, acquireTimeoutMillis: 20_000 },
    queryTimeoutMillis: 500
  })
  // Frozen: new connections are accepted and get nothing, open ones get nothing more.
  proxies[0].blackhole = true
  proxies[0].delayMillis = 3_600_000
  // The statements on the frozen host time out; their KILL cannot reach it: it goes out.
  await Promise.all([request(app, '/id'), request(app, '/id')])
  await until(() => app.dbPool.stats().hosts[0].state === 'down')
  const took: number[] = []
  for (let i = 0; i < 10; i++) {
    const sentAt = performance.now()
    const response = await request(app, '/id')
    took.push(performance.now() - sentAt)
    expect(response.status).toBe(200)
  }
  // None waited for a connect to the frozen host (that would take connectTimeout).
  expect(Math.max(...took)).toBeLessThan(connectTimeout / 2)
})

test('names the host in the outage log lines when there are several', async () => {
  proxies[0].refuse = true
  await start({ connection: proxies.slice(0, 2).map(urlOf), pool: { min: 1, max: 2 } })
  const label = labelOf(proxies[0])
  expect(logged()).toEqual(expect.arrayContaining([
    expect.objectContaining({ level: 40, host: label, msg: `cannot connect to the database host ${label}; holding connect attempts back` }),
    expect.objectContaining({ level: 40, host: label, state: 'down', msg: `host ${label} is down: out of rotation for new connections` })
  ]))
  expect(app.dbPool.stats().hosts[0].connections).toBe(0)
  proxies[0].refuse = false
  await until(() => logged().some((line) => line.msg === `host ${label} is back in rotation`))
  expect(logged()).toContainEqual(expect.objectContaining({ level: 30, host: label, msg: `database host ${label} reachable again` }))
})

test('uses the first host again once it answers (failback), and retires the connections to the next host', async () => {
  proxies[0].refuse = true
  await start({ connection: proxies.slice(0, 2).map(urlOf), pool: { min: 2, max: 4 } })
  expect(app.dbPool.stats().hosts.map((host) => host.connections)).toEqual([0, 2])
  proxies[0].refuse = false
  await until(() => app.dbPool.stats().hosts[0].state === 'up')
  const lent = lentHosts()
  try {
    for (let i = 0; i < 6; i++) expect((await request(app, '/id')).status).toBe(200)
  } finally {
    lent.stop()
  }
  // The retired connections to the second host may serve nothing more once the first is back.
  expect(lent.hosts.every((host) => host === labelOf(proxies[0]))).toBe(true)
  await until(() => app.dbPool.stats().hosts[1].connections === 0)
})

test('publishes the host on pool:connect, pool:acquire, pool:release, pool:destroy and breaker:open', async () => {
  const seen = new Map<string, Set<string | undefined>>()
  const listeners = ['poolConnect', 'poolAcquire', 'poolRelease', 'poolDestroy', 'breakerOpen'].map((name) => {
    const listener = (message: unknown): void => {
      const event = message as { host?: string, connectionId?: unknown }
      if (name === 'poolAcquire' && event.connectionId === undefined) return
      const hosts = seen.get(name) ?? new Set()
      hosts.add(event.host)
      seen.set(name, hosts)
    }
    subscribe(channels[name as keyof typeof channels], listener)
    return () => unsubscribe(channels[name as keyof typeof channels], listener)
  })
  try {
    proxies[0].refuse = true
    await start({ connection: proxies.slice(0, 2).map(urlOf), pool: { min: 1, max: 2 } })
    expect((await request(app, '/id')).status).toBe(200)
    await app.close()
  } finally {
    for (const stop of listeners) stop()
  }
  const second = labelOf(proxies[1])
  expect(Object.fromEntries([...seen].map(([name, hosts]) => [name, [...hosts]]))).toEqual({
    breakerOpen: [labelOf(proxies[0])],
    poolConnect: [second],
    poolAcquire: [second],
    poolRelease: [second],
    poolDestroy: [second]
  })
})
