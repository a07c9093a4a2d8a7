import type { FastifyInstance } from 'fastify'
import type { Knex } from 'knex'
import forkSafeDb from '../lib'
import { buildApp, simulatePid, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// Node cannot fork a live process, so a fork is simulated by changing what `process.pid`
// reads: the plugin must treat every pool built under another pid as the parent's.

const fixture = perTestUser()

let logged: LoggedApp
let restorePid: (() => void) | undefined
let inherited: Knex | undefined

beforeEach(() => { logged = buildApp() })
afterEach(async () => {
  // Close while the simulated pid is in force: the app's pool belongs to that "child".
  await logged.app.close()
  restorePid?.()
  restorePid = undefined
  await inherited?.destroy()
  inherited = undefined
})

async function warmApp (): Promise<FastifyInstance> {
  await logged.app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 2, max: 4 }, maxPendingAcquires: 50 })
  await logged.app.ready()
  return logged.app
}

async function connectionId (db: Knex): Promise<number> {
  const [rows] = await db.raw('SELECT CONNECTION_ID() AS id')
  return Number(rows[0].id)
}

test('builds a fresh pool on new connections after a pid change, leaving the inherited connections open and idle', async () => {
  const app = await warmApp()
  inherited = app.db
  const parentIds = await fixture.database.connectionIds(fixture.user.user)
  expect(parentIds).toHaveLength(2)

  restorePid = simulatePid(process.pid + 100_000)
  const fresh = app.db
  expect(fresh).not.toBe(inherited)
  const childId = await connectionId(fresh)
  expect(parentIds).not.toContain(childId)

  const processes = await fixture.database.processes(fixture.user.user)
  expect(processes.map((process) => process.id)).toEqual([...parentIds, childId].sort((a, b) => a - b))
  expect(processes.filter((process) => parentIds.includes(process.id)).map((process) => process.command)).toEqual(['Sleep', 'Sleep'])
})

test('close() in the child destroys only its own pool and leaves the parent\'s connections usable', async () => {
  const app = await warmApp()
  inherited = app.db
  const parentIds = await fixture.database.connectionIds(fixture.user.user)

  restorePid = simulatePid(process.pid + 100_000)
  await connectionId(app.db)
  await app.close()
  restorePid()
  restorePid = undefined

  expect(await fixture.database.settledCount(fixture.user.user, 2)).toBe(2)
  expect(await fixture.database.connectionIds(fixture.user.user)).toEqual(parentIds)
  // The parent's sockets were not touched: the inherited pool still answers on the same connections.
  expect(parentIds).toContain(await connectionId(inherited))
})

test('rebuilds once per pid however many requests arrive at the same time', async () => {
  const app = logged.app
  // request.db is a per-request view; the client underneath identifies the process's pool.
  const seen = new Set<Knex.Client>()
  app.get('/', async (request) => {
    seen.add(request.db.client)
    await request.db.raw('SELECT 1')
    return 'ok'
  })
  await warmApp()
  inherited = app.db

  restorePid = simulatePid(process.pid + 100_000)
  const responses = await Promise.all(Array.from({ length: 50 }, () => app.inject('/')))
  expect(responses.every((response) => response.statusCode === 200)).toBe(true)
  expect(seen.size).toBe(1)
  expect(seen.has(inherited.client)).toBe(false)
  const warnings = logged.lines().filter((line) => line.level === 40 && String(line.msg).startsWith('process id changed'))
  expect(warnings).toHaveLength(1)
  expect(warnings[0]).toMatchObject({ previousPid: expect.any(Number), pid: process.pid })
})
