import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { TcpProxy } from '../support/tcp-proxy'

// A fleet that restarts at once must not hit the server with workers x pool.min handshakes at
// the same instant. Three "workers" warm up together through a proxy that adds 30 ms each way,
// so one handshake (greeting, response, OK, then the verifying ping) takes well over 100 ms:
// connections accepted within the same 50 ms window are handshaking at the same time.

const fixture = perTestUser()
const WORKERS = 3
const POOL_MIN = 6
const ONE_WAY_DELAY_MILLIS = 30
const SIMULTANEOUS_WINDOW_MILLIS = 50

let proxy: TcpProxy
let apps: FastifyInstance[] = []

beforeEach(async () => {
  proxy = await TcpProxy.start({ target: { host: fixture.user.connection.host, port: fixture.user.connection.port }, delayMillis: ONE_WAY_DELAY_MILLIS })
})
afterEach(async () => {
  await Promise.all(apps.map(async (app) => app.close()))
  apps = []
  await proxy.close()
  jest.restoreAllMocks()
})

async function startWorkers (options: { warmupConcurrency?: number, warmupJitterMillis?: number }): Promise<void> {
  apps = Array.from({ length: WORKERS }, () => buildApp().app)
  for (const app of apps) await app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), pool: { min: POOL_MIN, max: POOL_MIN }, ...options })
  await Promise.all(apps.map(async (app) => app.ready()))
}

test('opens at most warmupConcurrency connections at a time per process (default 2)', async () => {
  await startWorkers({})
  expect(proxy.accepted).toBe(WORKERS * POOL_MIN)
  expect(proxy.peakAcceptedWithin(SIMULTANEOUS_WINDOW_MILLIS)).toBeLessThanOrEqual(WORKERS * 2)
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(WORKERS * POOL_MIN)
})

test('without the limit the same fleet handshakes far more connections at once', async () => {
  await startWorkers({ warmupConcurrency: POOL_MIN })
  expect(proxy.peakAcceptedWithin(SIMULTANEOUS_WINDOW_MILLIS)).toBeGreaterThan(WORKERS * 2)
})

test('waits a random delay of up to warmupJitterMillis before its first connect', async () => {
  // The delay is random; pin it to half the jitter so the lower bound can be asserted.
  jest.spyOn(Math, 'random').mockReturnValue(0.5)
  const app = buildApp().app
  apps = [app]
  await app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), pool: { min: 1, max: 1 }, warmupJitterMillis: 400 })
  const started = performance.now()
  await app.ready()
  expect(proxy.acceptedAt[0] - started).toBeGreaterThanOrEqual(200)
})
