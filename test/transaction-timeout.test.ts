import type { FastifyInstance } from 'fastify'
import type { Knex } from 'knex'
import type { RowDataPacket } from 'mysql2/promise'
import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { request } from './helpers/http-client'
import { TcpProxy } from '../support/tcp-proxy'

// A statement that times out inside a transaction fails the transaction at once: its caller, and
// a route's response, do not wait for the KILL QUERY, which needs a new connection to the server
// and can be slow. The transaction's connection is closed instead (the server rolls the
// transaction back) and the KILL finishes in the background. The proxy makes only connections
// opened after the pool is warm slow, so the pool's own connection stays fast and the KILL's
// connection is the slow one.

const fixture = perTestUser({ ownDatabase: true })
const TIMEOUT_MILLIS = 1000
const KILL_DELAY_MILLIS = 2500
// The bound the caller is held to is the timeout plus 200 ms; asserted loosely, so a loaded
// machine cannot fail it, yet under what callers waited before: the KILL's own bound (2 s) after
// the timeout, or, with queryTimeoutMillis, a second timeout for the ROLLBACK (timers that
// cannot fire early).
const ANSWERED_WITHIN_MILLIS = TIMEOUT_MILLIS + 700
// The statement the KILL does not reach in time runs to its end; then the server rolls back.
const SLEEP_SECONDS = 3
const GONE_WITHIN_MILLIS = 10_000
const POOL = { min: 1, max: 1 }
// The KILL's connection, given up on after the cancel's own bound, is closed at its connect
// timeout: shortened so the test sees it go.
const CONNECT_TIMEOUT_MILLIS = 4000
// A delay per chunk that makes the KILL land about a second and a half after the timeout: well
// after it, within the cancel's own bound (2 s).
const KILL_LANDS_LATE_DELAY_MILLIS = 250

let proxy: TcpProxy
let logged: LoggedApp
let app: FastifyInstance

async function start (options: { queryTimeoutMillis?: number } = {}): Promise<FastifyInstance> {
  await fixture.database.admin.query(`CREATE TABLE \`${fixture.user.user}\`.writes (id INT PRIMARY KEY)`)
  const target = new URL(fixture.user.url)
  proxy = await TcpProxy.start({ target: { host: target.hostname, port: Number(target.port) } })
  logged = buildApp()
  app = logged.app
  const connection = { ...fixture.user.connection, host: '127.0.0.1', port: proxy.port, connectTimeout: CONNECT_TIMEOUT_MILLIS }
  await app.register(forkSafeDb, { connection, pool: POOL, ...options })
  return app
}

afterEach(async () => {
  await app?.close()
  await proxy?.close()
})

/** Makes connections opened from now on (the KILL's) slow; the pool's warm one stays fast. */
function slowNewConnections (): void {
  proxy.delayNewMillis = KILL_DELAY_MILLIS
}

const SLEEP = `SELECT SLEEP(${SLEEP_SECONDS}) AS timed_out_in_transaction`

function timedStatement (trx: Knex.Transaction, own: boolean): Knex.Raw {
  const statement = trx.raw(SLEEP)
  return own ? statement.timeout(TIMEOUT_MILLIS, { cancel: true }) : statement
}

async function rowsWritten (): Promise<number> {
  const [rows] = await fixture.database.admin.query<RowDataPacket[]>(`SELECT COUNT(*) AS n FROM \`${fixture.user.user}\`.writes`)
  return Number(rows[0].n)
}

/** Polls `done` until it holds; throws, naming `what`, if it does not within GONE_WITHIN_MILLIS. */
async function eventually (what: string, done: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = performance.now() + GONE_WITHIN_MILLIS
  while (!(await done())) {
    if (performance.now() > deadline) throw new Error(`${what} did not happen within ${GONE_WITHIN_MILLIS} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The timed-out statement's server thread has ended: its transaction is over then. */
async function transactionThreadGone (): Promise<boolean> {
  return !(await fixture.database.stillRunningAfter(fixture.user.user, 'timed_out_in_transaction', 0))
}

/** After the statement ended: the write was rolled back, and the server holds the pool's floor, no more. */
async function expectRolledBackAndSettled (): Promise<void> {
  await eventually('the end of the timed-out statement', transactionThreadGone)
  expect(await rowsWritten()).toBe(0)
  proxy.delayNewMillis = undefined
  // The closed connection is replaced when the pool is next used.
  expect((await app.db.raw('SELECT 1 AS ok'))[0]).toEqual([{ ok: 1 }])
  expect(await fixture.database.settledCount(fixture.user.user, POOL.min)).toBe(POOL.min)
  // The KILL's slow connection goes too.
  await eventually('the close of the KILL\'s connection', () => proxy.openConnections === POOL.min)
}

interface Outcome { error: unknown, waitedMillis: number }

/** Runs `transaction`, noting when its timed statement was sent; resolves with how long the caller waited after that. */
async function measure (transaction: (sent: () => void) => Promise<unknown>): Promise<Outcome> {
  let sentAt = Number.NaN
  const error = await transaction(() => { sentAt = performance.now() }).then(() => undefined, (error: unknown) => error)
  const waitedMillis = performance.now() - sentAt
  process.stdout.write(`${expect.getState().currentTestName}: caller waited ${Math.round(waitedMillis)} ms\n`)
  return { error, waitedMillis }
}

function expectTimeoutError (error: unknown): void {
  expect(error).toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT', timeout: TIMEOUT_MILLIS })
  const message = (error as Error).message
  expect(message).toContain(`${TIMEOUT_MILLIS} ms`)
  expect(message).not.toContain('undefined')
}

describe.each([
  ['.timeout(ms, { cancel: true })', true],
  ['queryTimeoutMillis', false]
])('a statement that outlives %s inside a transaction', (_which, own) => {
  const options = own ? {} : { queryTimeoutMillis: TIMEOUT_MILLIS }

  test('rejects the callback-form transaction at once, however slow the KILL is', async () => {
    await (await start(options)).ready()
    slowNewConnections()
    const { error, waitedMillis } = await measure((sent) => app.db.transaction(async (trx) => {
      await trx('writes').insert({ id: 1 })
      sent()
      await timedStatement(trx, own)
    }))
    expectTimeoutError(error)
    expect(waitedMillis).toBeLessThan(ANSWERED_WITHIN_MILLIS)
    await expectRolledBackAndSettled()
  })

  test('lets an awaited transaction roll back at once, however slow the KILL is', async () => {
    await (await start(options)).ready()
    slowNewConnections()
    const trx = await app.db.transaction()
    const outcome = trx.executionPromise.then(() => undefined, (error: unknown) => error)
    await trx('writes').insert({ id: 1 })
    const { error, waitedMillis } = await measure(async (sent) => {
      sent()
      try {
        await timedStatement(trx, own)
      } catch (error) {
        await trx.rollback(error)
        throw error
      }
    })
    expectTimeoutError(error)
    expect(await outcome).toBe(error)
    expect(waitedMillis).toBeLessThan(ANSWERED_WITHIN_MILLIS)
    await expectRolledBackAndSettled()
  })

  test('answers a { db: { transaction: true } } route with a 503 at once, however slow the KILL is', async () => {
    await start(options)
    let sentAt = Number.NaN
    app.post('/write', { db: { transaction: true } }, async (request) => {
      await request.db('writes').insert({ id: 1 })
      sentAt = performance.now()
      return timedStatement(request.db as unknown as Knex.Transaction, own)
    })
    await app.listen({ host: '127.0.0.1', port: 0 })
    slowNewConnections()
    const response = await request(app, '/write', { method: 'POST' })
    const body = JSON.parse(response.body) as { code?: string, message?: string }
    const waitedMillis = performance.now() - sentAt
    process.stdout.write(`${expect.getState().currentTestName}: client waited ${Math.round(waitedMillis)} ms\n`)
    expect(response.status).toBe(503)
    expect(body.code).toBe('FST_FORK_SAFE_DB_QUERY_TIMEOUT')
    expect(body.message).toContain(`${TIMEOUT_MILLIS} ms`)
    expect(waitedMillis).toBeLessThan(ANSWERED_WITHIN_MILLIS)
    await expectRolledBackAndSettled()
  })
})

test('a transaction that goes on after its statement timed out fails at once and keeps none of its writes', async () => {
  await (await start()).ready()
  slowNewConnections()
  let later: unknown
  const { error, waitedMillis } = await measure((sent) => app.db.transaction(async (trx) => {
    await trx('writes').insert({ id: 1 })
    sent()
    await timedStatement(trx, true).catch(() => {})
    later = await trx('writes').insert({ id: 2 }).then(() => undefined, (error: unknown) => error)
    return 'committed?'
  }))
  expectTimeoutError(later)
  // The COMMIT fails with the same error.
  expectTimeoutError(error)
  expect(waitedMillis).toBeLessThan(ANSWERED_WITHIN_MILLIS)
  await expectRolledBackAndSettled()
})

test('answers the caller before the KILL lands, and the KILL still stops the statement in the background', async () => {
  await (await start()).ready()
  // Slow enough that the KILL lands well after the timeout, fast enough that it lands.
  proxy.delayNewMillis = KILL_LANDS_LATE_DELAY_MILLIS
  const { error } = await measure((sent) => app.db.transaction(async (trx) => {
    await trx('writes').insert({ id: 1 })
    sent()
    await trx.raw('SELECT SLEEP(10) AS timed_out_in_transaction').timeout(TIMEOUT_MILLIS, { cancel: true })
  }))
  expectTimeoutError(error)
  // The caller did not wait for the KILL: the statement was still running when it was answered.
  expect(await transactionThreadGone()).toBe(false)
  const killedAt = performance.now()
  await eventually('the KILL', transactionThreadGone)
  process.stdout.write(`the KILL stopped the statement ${Math.round(performance.now() - killedAt)} ms after the caller was answered\n`)
  // Well before SLEEP(10) could have ended by itself.
  expect(performance.now() - killedAt).toBeLessThan(5000)
  expect(logged.lines().some((line) => typeof line.msg === 'string' && line.msg.startsWith('KILL QUERY'))).toBe(false)
  await expectRolledBackAndSettled()
})

test('a KILL that arrives after the closed transaction\'s statement ended logs no warning', async () => {
  await (await start()).ready()
  // The statement ends by itself (0.3 s after the timeout) before the slowed KILL lands; by then the server has
  // ended the thread of the closed connection and answers the KILL with "Unknown thread id".
  proxy.delayNewMillis = KILL_LANDS_LATE_DELAY_MILLIS
  const { error } = await measure((sent) => app.db.transaction(async (trx) => {
    sent()
    await trx.raw(`SELECT SLEEP(${(TIMEOUT_MILLIS + 300) / 1000}) AS timed_out_in_transaction`).timeout(TIMEOUT_MILLIS, { cancel: true })
  }))
  expectTimeoutError(error)
  await eventually('the thread\'s end', transactionThreadGone)
  // The KILL's connection closes once its KILL has been answered (the pool's was closed at the timeout).
  await eventually('the KILL\'s answer', () => proxy.openConnections === 0)
  expect(logged.lines().filter((line) => line.level === 40)).toEqual([])
})

test('fails a stream begun on a transaction whose statement timed out, instead of leaving it waiting', async () => {
  await start()
  let streamed: unknown
  const outcome = app.db.transaction(async (trx) => {
    await timedStatement(trx, true).catch(() => {})
    streamed = await new Promise((resolve) => {
      trx.raw('SELECT 1 AS streamed').stream().on('error', resolve).on('end', () => resolve('ended')).resume()
    })
  })
  // The transaction cannot commit after its statement timed out.
  await expect(outcome).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })
  expect(streamed).toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })
  await eventually('the pool settling', () => app.db.client.pool.numUsed() === 0)
})
