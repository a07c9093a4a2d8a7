import cluster, { type Worker } from 'node:cluster'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// A Jest worker is a cluster primary like any plain Node process; forking an idle cluster worker
// from it makes it a primary that has workers.

const fixture = perTestUser()
const WARNING = 'a connection pool was built in a cluster primary that has forked workers: build it in the workers (register the plugin there) and let the primary hold none'

let logged: LoggedApp
let app: FastifyInstance
let worker: Worker | undefined

beforeAll(() => { cluster.setupPrimary({ exec: join(__dirname, 'fixtures', 'idle-worker.js'), silent: true }) })
beforeEach(() => {
  logged = buildApp()
  app = logged.app
  app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 1 } })
})
afterEach(async () => {
  await app.close()
  if (worker !== undefined) {
    const exited = new Promise((resolve) => worker?.once('exit', resolve))
    worker.disconnect()
    await exited
    worker = undefined
  }
})

async function forkWorker (): Promise<void> {
  worker = cluster.fork()
  await new Promise((resolve) => worker?.once('online', resolve))
}

const warnings = () => logged.lines().filter((line) => line.msg === WARNING)

test('warns once when the pool is built in a primary that has already forked workers', async () => {
  await forkWorker()
  await app.ready()
  await app.db.raw('SELECT 1')
  expect(warnings()).toEqual([expect.objectContaining({ level: 40, workers: 1 })])
})

test('warns once when a primary forks workers after building its pool', async () => {
  await app.ready()
  expect(warnings()).toHaveLength(0)
  await forkWorker()
  expect(warnings()).toHaveLength(1)
})

test('does not warn in a process without cluster workers', async () => {
  await app.ready()
  await app.db.raw('SELECT 1')
  expect(warnings()).toHaveLength(0)
})
