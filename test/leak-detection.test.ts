import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Knex } from 'knex'
import forkSafeDb from '../lib'
import { ForkSafeClient } from '../lib/client/fork-safe-client'
import { LeakTrackingClient } from '../lib/client/leak-tracking-client'
import { simulatePid } from './helpers/app'
import { barrier } from './helpers/barrier'
import { perTestUser } from './helpers/database'
import { watchTimers } from './helpers/timers'
import { request } from './helpers/http-client'
import { buildWatchedApp, type WatchedApp } from './helpers/log-watch'

// `leakDetectionThresholdMillis`: a connection held past it is reported once, with the stack of
// the code that borrowed it, its route and request id; its return is reported too; stats()
// lists who holds what. Off, none of it happens and no stack is captured.

const fixture = perTestUser()
const LEAK = 'connection leak detection triggered: a connection has been held longer than leakDetectionThresholdMillis (the borrower\'s stack is in `stack`)'
const BACK = 'a connection reported as a possible leak came back to the pool (unleaked)'
const THRESHOLD_MILLIS = 100

let watched: WatchedApp
let app: FastifyInstance

beforeEach(() => {
  watched = buildWatchedApp()
  app = watched.app
})
afterEach(async () => { await app.close() })

const isLeak = (decorator = 'db') => (line: Record<string, unknown>) => line.msg === LEAK && line.decorator === decorator
const isBack = (decorator = 'db') => (line: Record<string, unknown>) => line.msg === BACK && line.decorator === decorator

async function connectionIdOf (db: Knex | Knex.Transaction): Promise<number> {
  return (await db.raw('SELECT CONNECTION_ID() AS id'))[0][0].id
}

test('warns once past the threshold with the stack of the function that holds the connection, and again when it comes back', async () => {
  await app.register(forkSafeDb, { connection: fixture.user.url, leakDetectionThresholdMillis: THRESHOLD_MILLIS })
  await app.ready()
  async function holdsCheckoutConnection (): Promise<Knex.Transaction> {
    return await app.db.transaction()
  }
  const trx = await holdsCheckoutConnection()
  const connectionId = await connectionIdOf(trx)

  const warning = await watched.line(isLeak())
  expect(warning).toMatchObject({ level: 40, plugin: 'fastify-fork-safe-db', connectionId, host: `${fixture.user.connection.host}:${fixture.user.connection.port}`, thresholdMillis: THRESHOLD_MILLIS })
  expect(warning.heldMillis).toBeGreaterThanOrEqual(THRESHOLD_MILLIS)
  // The borrower's frame comes first: neither the plugin's nor knex's frames are above it.
  expect(String(warning.stack).split('\n')[0]).toMatch(/^\s+at holdsCheckoutConnection \(.*leak-detection\.test\.ts:\d+:\d+\)$/)
  // Outside a request: no route, no request id.
  expect(warning).not.toHaveProperty('route')
  expect(warning).not.toHaveProperty('requestId')

  await trx.commit()
  const back = await watched.line(isBack())
  expect(back).toMatchObject({ level: 30, connectionId })
  expect(back.heldMillis).toBeGreaterThanOrEqual(warning.heldMillis as number)
  expect(watched.lines().filter(isLeak())).toHaveLength(1)
})

test('names the route and request id of a request.db statement held past the threshold, through a real HTTP request', async () => {
  let requestId: string | undefined
  app.get('/slow-report', async function buildsTheSlowReport (request: FastifyRequest) {
    requestId = request.id
    await request.db.raw('SELECT SLEEP(0.5) AS slept')
    return { done: true }
  })
  await app.register(forkSafeDb, { connection: fixture.user.url, leakDetectionThresholdMillis: THRESHOLD_MILLIS })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const answered = request(app, '/slow-report')

  const warning = await watched.line(isLeak())
  expect(warning).toMatchObject({ route: 'GET /slow-report', requestId })
  expect(String(warning.stack)).toMatch(/^\s+at (Object\.)?buildsTheSlowReport /)
  // Listed while held, with the same borrower.
  expect(app.dbPool.stats().holders).toEqual([expect.objectContaining({ connectionId: warning.connectionId, route: 'GET /slow-report', requestId, stack: warning.stack })])

  expect((await answered).status).toBe(200)
  const back = await watched.line(isBack())
  expect(back).toMatchObject({ connectionId: warning.connectionId, route: 'GET /slow-report', requestId })
  expect(app.dbPool.stats().holders).toEqual([])
})

test('survives a connection held past the threshold by a not-found handler, whose request matched no route, and never logs its query string', async () => {
  let requestId: string | undefined
  app.setNotFoundHandler(async function answersNotFound (request, reply) {
    requestId = request.id
    await request.db.raw('SELECT SLEEP(0.3) AS slept')
    // Read while the statement's connection is still this request's (the old route threw here).
    await reply.code(404).send({ holders: app.dbPool.stats().holders.length })
  })
  await app.register(forkSafeDb, { connection: fixture.user.url, leakDetectionThresholdMillis: 50 })
  await app.listen({ port: 0, host: '127.0.0.1' })

  const answered = await request(app, '/reset?token=s3cr3t-reset-token')
  expect(answered.status).toBe(404)
  const warning = await watched.line(isLeak())
  expect(warning.requestId).toBe(requestId)
  expect(warning).not.toHaveProperty('route')
  expect(String(warning.stack)).toMatch(/^\s+at (Object\.)?answersNotFound /)
  expect(await watched.line(isBack())).not.toHaveProperty('route')
  // Fastify's own request lines carry the URL (its logger's choice); none of the plugin's does.
  const plugins = watched.lines().filter((line) => line.req === undefined && line.res === undefined)
  expect(JSON.stringify(plugins)).not.toContain('token=')
})

test('gives a { db: { transaction: true } } route\'s holder that route', async () => {
  let requestId: string | undefined
  app.post('/checkout', { db: { transaction: true } }, async (request) => {
    requestId = request.id
    await request.db.raw('SELECT SLEEP(0.4) AS slept')
    return { done: true }
  })
  await app.register(forkSafeDb, { connection: fixture.user.url, leakDetectionThresholdMillis: THRESHOLD_MILLIS })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const answered = request(app, '/checkout', { method: 'POST' })

  const warning = await watched.line(isLeak())
  expect(warning).toMatchObject({ route: 'POST /checkout', requestId })
  expect(typeof warning.stack).toBe('string')
  expect((await answered).status).toBe(200)
  // The route's COMMIT has run before the response: the connection is back.
  expect((await watched.line(isBack())).route).toBe('POST /checkout')
  expect(app.dbPool.stats().holders).toEqual([])
})

test('lists the current holders in stats(), longest held first, each with its stack, and drops them when they come back', async () => {
  await app.register(forkSafeDb, { connection: fixture.user.url, leakDetectionThresholdMillis: 60_000 })
  await app.ready()
  expect(app.dbPool.stats().holders).toEqual([])
  async function holdsFirst (): Promise<Knex.Transaction> { return await app.db.transaction() }
  async function holdsSecond (): Promise<Knex.Transaction> { return await app.db.transaction() }
  const first = await holdsFirst()
  const second = await holdsSecond()
  const ids = [await connectionIdOf(first), await connectionIdOf(second)]

  const holders = app.dbPool.stats().holders
  expect(holders.map((holder) => holder.connectionId)).toEqual(ids)
  expect(holders[0].heldMillis).toBeGreaterThanOrEqual(holders[1].heldMillis)
  expect(holders[0].stack).toMatch(/^\s+at holdsFirst /)
  expect(holders[1].stack).toMatch(/^\s+at holdsSecond /)
  expect(holders[0]).toMatchObject({ host: `${fixture.user.connection.host}:${fixture.user.connection.port}`, route: undefined, requestId: undefined })

  await first.commit()
  expect(app.dbPool.stats().holders.map((holder) => holder.connectionId)).toEqual([ids[1]])
  await second.rollback()
  expect(app.dbPool.stats().holders).toEqual([])
  // Neither was held for a minute: nothing was reported.
  expect(watched.lines().filter((line) => line.msg === LEAK || line.msg === BACK)).toEqual([])
})

test('never warns, captures nothing and lists no holder for a registration that leaves it off, next to one that has it on', async () => {
  await app.register(forkSafeDb, { connection: fixture.user.url })
  await app.register(forkSafeDb, { connection: fixture.user.url, decorator: 'audit', leakDetectionThresholdMillis: THRESHOLD_MILLIS })
  await app.ready()
  // No subclass, so no stack is captured and no holder is kept.
  expect(app.db.client.constructor).toBe(ForkSafeClient)
  expect((app as unknown as { audit: Knex }).audit.client).toBeInstanceOf(LeakTrackingClient)

  // Both held from the same moment; the watched one's warning proves the threshold has passed for both.
  const both = barrier(2)
  async function holdsUnwatched (): Promise<Knex.Transaction> { const trx = await app.db.transaction(); await both(); return trx }
  async function holdsWatched (): Promise<Knex.Transaction> { const trx = await (app as unknown as { audit: Knex }).audit.transaction(); await both(); return trx }
  const [unwatched, audited] = await Promise.all([holdsUnwatched(), holdsWatched()])
  const auditedId = await connectionIdOf(audited)

  const warning = await watched.line(isLeak('audit'))
  expect(warning.connectionId).toBe(auditedId)
  expect(warning.stack).toMatch(/^\s+at holdsWatched /)
  expect(app.dbPool.stats().holders).toEqual([])
  expect((app as unknown as { auditPool: typeof app.dbPool }).auditPool.stats().holders.map((holder) => holder.connectionId)).toEqual([auditedId])

  await Promise.all([unwatched.commit(), audited.commit()])
  await watched.line(isBack('audit'))
  const reported = watched.lines().filter((line) => line.msg === LEAK || line.msg === BACK)
  expect(reported.map((line) => [line.decorator, line.msg])).toEqual([['audit', LEAK], ['audit', BACK]])
})

test('after a pid change, reports and lists only the new process\'s holders, never the inherited pool\'s', async () => {
  await app.register(forkSafeDb, { connection: fixture.user.url, leakDetectionThresholdMillis: THRESHOLD_MILLIS })
  await app.ready()
  const inherited = app.db
  const parentTrx = await inherited.transaction()
  const parentId = await connectionIdOf(parentTrx)

  const restorePid = simulatePid(process.pid + 100_000)
  try {
    async function holdsInTheChild (): Promise<Knex.Transaction> { return await app.db.transaction() }
    const childTrx = await holdsInTheChild()
    const childId = await connectionIdOf(childTrx)
    expect(app.dbPool.stats().holders.map((holder) => holder.connectionId)).toEqual([childId])
    const warning = await watched.line(isLeak())
    // The parent's connection was held longer: had the inherited pool's detector kept running, its warning would have come first.
    expect(warning).toMatchObject({ connectionId: childId })
    expect(watched.lines().filter(isLeak()).map((line) => line.connectionId)).not.toContain(parentId)
    await childTrx.commit()
    await app.close()
  } finally {
    restorePid()
  }
  // The parent's transaction still works on its connection, untouched by the child.
  expect(await connectionIdOf(parentTrx)).toBe(parentId)
  await parentTrx.rollback()
  await inherited.destroy()
})

test('leaves no sweep timer behind once the app is closed, though its holder never reached the threshold', async () => {
  const timers = watchTimers()
  try {
    await app.register(forkSafeDb, { connection: fixture.user.url, leakDetectionThresholdMillis: 60_000 })
    await app.ready()
    const trx = await app.db.transaction()
    expect((await timers.alive()).filter((stack) => stack.includes('leak-detector'))).toHaveLength(1)
    await trx.commit()
    await app.close()
    expect((await timers.alive()).filter((stack) => stack.includes('leak-detector'))).toEqual([])
  } finally {
    timers.stop()
  }
})
