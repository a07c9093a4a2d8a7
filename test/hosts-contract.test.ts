import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { FastifyInstance } from 'fastify'
import forkSafeDb, { channels } from '../lib'
import { runtimeOf } from '../lib/client/runtime'
import type { DriverConnection } from '../lib/driver/types'
import { buildApp } from './helpers/app'
import { TestDatabase, type TestUser } from './helpers/database'
import { request } from './helpers/http-client'
import { TcpProxy } from '../support/tcp-proxy'

// What the other policies call on the host set (the lag guard, the roles check): takeOut,
// putBack and refused, seen from the requests they route, on two proxies of the shared server.

let database: TestDatabase
let user: TestUser
let proxies: TcpProxy[]
let app: FastifyInstance

beforeAll(async () => { database = await TestDatabase.open() })
afterAll(async () => { await database.close() })
beforeEach(async () => {
  user = await database.createUser()
  const target = { host: user.connection.host, port: user.connection.port }
  proxies = await Promise.all([TcpProxy.start({ target }), TcpProxy.start({ target })])
  app = buildApp().app
  await app.register(forkSafeDb, { connection: proxies.map((proxy) => proxy.urlFor(user.url)), pool: { min: 2, max: 4 } })
  app.get('/id', async (req) => req.db.raw('SELECT CONNECTION_ID() AS id'))
  await app.listen({ port: 0, host: '127.0.0.1' })
})
afterEach(async () => {
  await app.close()
  for (const proxy of proxies) await proxy.close()
  expect(await database.settledCount(user.user, 0)).toBe(0)
})

const labelOf = (proxy: TcpProxy): string => `127.0.0.1:${proxy.port}`
const hostsOf = () => runtimeOf(app.db.client as { config: object }).hosts

/** The hosts of the connections lent to `count` requests in a row, and their statuses. */
async function serve (count: number): Promise<{ hosts: string[], statuses: number[], codes: Array<string | undefined> }> {
  const hosts: string[] = []
  const onAcquire = (message: unknown): void => {
    const event = message as { host?: string, internal: boolean }
    if (!event.internal && event.host !== undefined) hosts.push(event.host)
  }
  subscribe(channels.poolAcquire, onAcquire)
  const statuses: number[] = []
  const codes: Array<string | undefined> = []
  try {
    for (let i = 0; i < count; i++) {
      const response = await request(app, '/id')
      statuses.push(response.status)
      codes.push((JSON.parse(response.body) as { code?: string }).code)
    }
  } finally {
    unsubscribe(channels.poolAcquire, onAcquire)
  }
  return { hosts, statuses, codes }
}

test('takeOut sends new connections to the next host and retires the taken-out host\'s; putBack brings them back', async () => {
  hostsOf().takeOut(0, 'lagging')
  expect(hostsOf().hosts.map((host) => host.state)).toEqual(['lagging', 'up'])
  const away = await serve(6)
  expect(away.statuses).toEqual(Array(6).fill(200))
  expect(new Set(away.hosts)).toEqual(new Set([labelOf(proxies[1])]))
  hostsOf().putBack(0)
  const back = await serve(6)
  expect(back.statuses).toEqual(Array(6).fill(200))
  expect(new Set(back.hosts)).toEqual(new Set([labelOf(proxies[0])]))
})

test('fails borrows with FST_FORK_SAFE_DB_UNAVAILABLE, naming each host\'s state, while every host is out', async () => {
  hostsOf().takeOut(0, 'lagging')
  hostsOf().takeOut(1, 'lagging')
  const { statuses, codes } = await serve(2)
  expect(statuses).toEqual([503, 503])
  expect(codes).toEqual(['FST_FORK_SAFE_DB_UNAVAILABLE', 'FST_FORK_SAFE_DB_UNAVAILABLE'])
  expect(hostsOf().unavailable().message).toContain(`no host in rotation: ${labelOf(proxies[0])} lagging, ${labelOf(proxies[1])} lagging`)
})

test('refused takes a not-ready host out for any role, and leaves a read-only one in for role any', async () => {
  const connection = await app.db.client.acquireConnection() as DriverConnection
  try {
    hostsOf().refused(connection, 'read-only')
    expect(hostsOf().hosts[0].state).toBe('up')
    hostsOf().refused(connection, 'not-ready')
    expect(hostsOf().hosts[0].state).toBe('not-ready')
  } finally {
    await app.db.client.releaseConnection(connection)
  }
  // A background probe finds the server fit again (it is no Galera node) and puts it back.
  const deadline = performance.now() + 10_000
  while (hostsOf().hosts[0].state !== 'up' && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  expect(hostsOf().hosts[0].state).toBe('up')
})
