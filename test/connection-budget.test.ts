import type { FastifyInstance } from 'fastify'
import forkSafeDb, { computeBudget } from '../lib'
import { workersFromEnvironment } from '../lib/options/budget'
import { buildApp, simulatePid, type LoggedApp } from './helpers/app'
import { TcpProxy } from '../support/tcp-proxy'
import { perTestUser } from './helpers/database'

// workers x pool.max is what the server sees; a budget makes each process's pool.max its share.

const fixture = perTestUser()

describe('the arithmetic', () => {
  const sixteenWorkers = { workers: 16, total: 151, reserve: 10, poolMax: 10, poolMin: 2, explicitMax: false, explicitMin: false }

  test('gives each of 16 workers floor((151 - 10) / 16) = 8 connections', () => {
    expect(computeBudget(sixteenWorkers)).toEqual({ perProcess: 8, poolMax: 8, poolMin: 2, fits: true })
  })

  test('keeps a default pool.max below the share as it is', () => {
    expect(computeBudget({ ...sixteenWorkers, workers: 2 })).toMatchObject({ perProcess: 70, poolMax: 10, fits: true })
  })

  test('does not fit when pool.max was set above the share, and caps it', () => {
    const budget = computeBudget({ ...sixteenWorkers, explicitMax: true })
    expect(budget).toMatchObject({ perProcess: 8, poolMax: 8, fits: false })
    expect(budget.problem).toBe('16 processes x pool.max 10 = 160 exceeds 151 - reserve 10 = 141; pool.max capped at 8')
  })

  test('does not fit when not even one connection per process is left', () => {
    expect(computeBudget({ ...sixteenWorkers, total: 20 })).toMatchObject({ perProcess: 0, poolMax: 1, poolMin: 1, fits: false })
  })

  test('reads the worker count from WEB_CONCURRENCY, then pm2, else assumes 1', () => {
    expect(workersFromEnvironment({ WEB_CONCURRENCY: '4', pm_id: '0', instances: '3' })).toEqual({ workers: 4, from: 'WEB_CONCURRENCY' })
    expect(workersFromEnvironment({ pm_id: '0', instances: '3' })).toEqual({ workers: 3, from: 'pm2' })
    expect(workersFromEnvironment({ instances: '3' })).toEqual({ workers: 1, from: 'assumed' })
    expect(workersFromEnvironment({ WEB_CONCURRENCY: 'max' })).toEqual({ workers: 1, from: 'assumed' })
  })
})

describe('at warm-up', () => {
  let logged: LoggedApp
  let app: FastifyInstance

  function build (options: Record<string, unknown>): void {
    logged = buildApp()
    app = logged.app
    app.register(forkSafeDb, { connection: fixture.user.url, ...options })
    app.get('/sleep', async (request) => request.db.raw('SELECT SLEEP(0.2) AS budgeted'))
  }
  afterEach(async () => { await app.close() })

  test('caps pool.max at the share: 20 concurrent queries never hold more connections than that', async () => {
    build({ budget: { workers: 4, total: 22, reserve: 10 } })
    await app.ready()
    const state = { done: false, peak: 0 }
    const load = Promise.all(Array.from({ length: 20 }, async () => app.inject('/sleep')))
    load.finally(() => { state.done = true }).catch(() => {})
    while (!state.done) {
      state.peak = Math.max(state.peak, await fixture.database.countConnections(fixture.user.user))
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    expect((await load).every((response) => response.statusCode === 200)).toBe(true)
    expect(state.peak).toBe(3)
    expect(app.dbPool.stats().budget).toEqual({
      workers: 4, workersFrom: 'option', total: 22, totalFrom: 'option', reserve: 10, perProcess: 3, poolMax: 3, poolMin: 2, fits: true
    })
    expect(logged.lines().find((line) => line.msg === 'connection budget applied')).toMatchObject({ level: 30 })
  })

  test('derives the total from the account\'s max_user_connections when it is the smaller limit', async () => {
    await fixture.database.admin.query('ALTER USER ?@\'%\' WITH MAX_USER_CONNECTIONS 14', [fixture.user.user])
    build({ budget: { workers: 2, reserve: 2 } })
    await app.ready()
    expect(app.dbPool.stats().budget).toMatchObject({ total: 14, totalFrom: 'max_user_connections', perProcess: 6, poolMax: 6 })
    expect(app.dbPool.stats().connections.max).toBe(6)
  })

  test('derives the total from the server\'s max_connections by default', async () => {
    const [[{ limit }]] = await fixture.database.admin.query('SELECT @@GLOBAL.max_connections AS `limit`') as unknown as [[{ limit: number }]]
    build({ budget: { workers: 50 } })
    await app.ready()
    const share = Math.floor((limit - 10) / 50)
    expect(app.dbPool.stats().budget).toMatchObject({ total: limit, totalFrom: 'max_connections', perProcess: share, poolMax: Math.max(1, Math.min(10, share)) })
  })

  test('warns when the configuration cannot fit, and still starts', async () => {
    build({ pool: { min: 2, max: 10 }, budget: { workers: 4, total: 22, reserve: 10 } })
    await app.ready()
    const warning = logged.lines().find((line) => line.level === 40 && String(line.msg).startsWith('the connection budget does not fit'))
    expect(warning?.msg).toBe('the connection budget does not fit: 4 processes x pool.max 10 = 40 exceeds 22 - reserve 10 = 12; pool.max capped at 3')
    expect(app.dbPool.stats().connections.max).toBe(3)
  })

  test('rejects ready() with FST_FORK_SAFE_DB_BUDGET_EXCEEDED when asked to, leaving no connection open', async () => {
    build({ pool: { max: 10 }, budget: { workers: 4, total: 22, reserve: 10, onExceed: 'fail' } })
    await expect(app.ready()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_BUDGET_EXCEEDED' })
    expect(await fixture.database.settledCount(fixture.user.user, 0)).toBe(0)
  })

  test('refuses a malformed budget at registration', async () => {
    build({ budget: { workers: 0 } })
    await expect(app.ready()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_INVALID_OPTION', message: expect.stringContaining('budget.workers') })
  })
})

describe('a budget that must not silently do nothing', () => {
  let logged: LoggedApp
  let app: FastifyInstance
  afterEach(async () => { await app.close() })

  /** The most connections the server saw while `load` ran. */
  async function peakDuring (load: Promise<unknown>): Promise<number> {
    const state = { done: false, peak: 0 }
    load.finally(() => { state.done = true }).catch(() => {})
    while (!state.done) {
      state.peak = Math.max(state.peak, await fixture.database.countConnections(fixture.user.user))
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await load
    return state.peak
  }

  test('is applied at the first connection of a warmup: false pool, from the server\'s limits', async () => {
    await fixture.database.admin.query('ALTER USER ?@\'%\' WITH MAX_USER_CONNECTIONS 14', [fixture.user.user])
    logged = buildApp()
    app = logged.app
    await app.register(forkSafeDb, { connection: fixture.user.url, warmup: false, budget: { workers: 4, reserve: 10 } })
    app.get('/sleep', async (request) => request.db.raw('SELECT SLEEP(0.2) AS budgeted'))
    await app.ready()
    expect(await fixture.database.countConnections(fixture.user.user)).toBe(0)
    const responses = Array.from({ length: 8 }, () => app.inject('/sleep'))
    expect(await peakDuring(Promise.all(responses))).toBe(1)
    expect(app.dbPool.stats().budget).toMatchObject({ total: 14, totalFrom: 'max_user_connections', perProcess: 1, poolMax: 1 })
    expect(logged.lines().find((line) => line.msg === 'connection budget applied')).toBeDefined()
  })

  test('still caps the pool built after a pid change', async () => {
    logged = buildApp()
    app = logged.app
    await app.register(forkSafeDb, { connection: fixture.user.url, budget: { workers: 4, total: 22, reserve: 10 } })
    await app.ready()
    const inherited = app.db
    const restorePid = simulatePid(process.pid + 100_000)
    try {
      await app.db.raw('SELECT 1')
      expect(app.dbPool.stats()).toMatchObject({ rebuilds: 1, budget: { poolMax: 3 }, connections: { max: 3 } })
      await app.close()
    } finally {
      restorePid()
      await inherited.destroy()
    }
  })

  test('rejects ready() when the server\'s limits cannot be read, instead of budgeting against a guess', async () => {
    const target = new URL(fixture.user.url)
    const proxy = await TcpProxy.start({ target: { host: target.hostname, port: Number(target.port) } })
    try {
      proxy.resetOnQuery = /max_user_connections/
      logged = buildApp()
      app = logged.app
      await app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), budget: { workers: 2 } })
      await expect(app.ready()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_WARMUP_FAILED' })
      expect(app.dbPool.stats().budget).toBeUndefined()
    } finally {
      await proxy.close()
    }
  })
})
