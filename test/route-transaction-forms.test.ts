import { Readable, Transform } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { hangUpWhen, request } from './helpers/http-client'

// A `{ db: { transaction: true } }` route commits before its client can see a success, whatever
// form its reply takes: a stream read on the transaction itself (sent as it comes, committed after
// its last row), a hijacked reply (committed when the handler resolves), a web stream. Through a
// real socket: inject() hides how a stream, a hang-up or a hijacked reply really behave.

const fixture = perTestUser({ ownDatabase: true })
const ROWS = 200_000
const DIGITS = '(SELECT 0 AS n UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9)'
// 1 … 200,000 without recursion (MySQL caps recursive CTEs at 1000 rows).
const FILL_BIG = `INSERT INTO big (id) SELECT 1 + a.n + 10 * b.n + 100 * c.n + 1000 * d.n + 10000 * e.n + 100000 * f.n
  FROM ${DIGITS} a, ${DIGITS} b, ${DIGITS} c, ${DIGITS} d, ${DIGITS} e, (SELECT 0 AS n UNION ALL SELECT 1) f`

let logged: LoggedApp
let app: FastifyInstance

/** Lines of ids, read on `request.db` (the route's transaction). */
function idLines (db: FastifyInstance['db']): Readable {
  return db('big').select('id').orderBy('id').stream().pipe(new Transform({
    writableObjectMode: true,
    transform (row: { id: number }, _encoding, done) { done(null, `${row.id}\n`) }
  }))
}

beforeEach(async () => {
  logged = buildApp()
  app = logged.app
  // A short query timeout: a COMMIT stuck behind the stream would fail the test quickly.
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 2 }, queryTimeoutMillis: 5000 })
  app.get('/export', { db: { transaction: true } }, async (request, reply) => {
    await request.db('exports').insert({ who: 'export' })
    return reply.type('text/plain').send(idLines(request.db))
  })
  app.get('/export-doomed', { db: { transaction: true } }, async (request, reply) => {
    await request.db('exports').insert({ who: 'doomed' })
    const [[{ id }]] = await request.db.raw('SELECT CONNECTION_ID() AS id')
    // Another connection kills this one after the last row, before the plugin's COMMIT.
    const killFirst = new Transform({
      transform (chunk, _encoding, done) { done(null, chunk) },
      flush (done) { fixture.database.kill(id).then(() => done(), done) }
    })
    return reply.type('text/plain').send(idLines(request.db).pipe(killFirst))
  })
  app.get('/export-web', { db: { transaction: true } }, async (request, reply) => {
    await request.db('exports').insert({ who: 'web' })
    return reply.type('text/plain').send(Readable.toWeb(idLines(request.db)))
  })
  app.get('/export-response', { db: { transaction: true } }, async (request) => {
    await request.db('exports').insert({ who: 'response' })
    return new Response('a fetch Response', { status: 200 })
  })
  app.post('/hijacked', { db: { transaction: true } }, async (request, reply) => {
    await request.db('exports').insert({ who: 'hijacked' })
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/plain' })
    reply.raw.end('saved')
  })
  app.post('/hijacked-then-failed', { db: { transaction: true } }, async (request, reply) => {
    await request.db('exports').insert({ who: 'hijacked-then-failed' })
    reply.hijack()
    reply.raw.writeHead(202, { 'content-type': 'text/plain' })
    reply.raw.end('accepted')
    throw new Error('the handler failed after answering')
  })
  await app.ready()
  await app.db.schema.createTable('exports', (table) => { table.string('who', 40) })
  await app.db.schema.createTable('big', (table) => { table.integer('id').primary() })
  await app.listen({ port: 0, host: '127.0.0.1' })
})
afterEach(async () => { await app.close() })

/** The route transaction has ended once the pool has its connections back. */
async function transactionsEnded (): Promise<void> {
  while (app.db.client.pool.numUsed() > 0) await new Promise((resolve) => setImmediate(resolve))
}

async function exported (): Promise<string[]> {
  return fixture.database.admin.query(`SELECT who FROM \`${fixture.user.user}\`.exports ORDER BY who`)
    .then(([rows]) => (rows as Array<{ who: string }>).map((row) => row.who))
}

test('sends a 200,000-row stream read on the transaction, and commits after its last row', async () => {
  await app.db.raw(FILL_BIG)
  const response = await request(app, '/export')
  expect(response.status).toBe(200)
  expect(response.complete).toBe(true)
  const lines = response.body.trimEnd().split('\n')
  expect(lines).toHaveLength(ROWS)
  expect([lines[0], lines[ROWS - 1]]).toEqual(['1', String(ROWS)])
  // The COMMIT ran before the response's end.
  expect(await exported()).toEqual(['export'])
})

test('aborts the response, never completes it, when the COMMIT after the stream fails', async () => {
  await app.db('big').insert([{ id: 1 }, { id: 2 }, { id: 3 }])
  const response = await request(app, '/export-doomed')
  expect(response.status).toBe(200)
  expect(response.complete).toBe(false)
  await transactionsEnded()
  expect(await exported()).toEqual([])
})

test('rolls back when the client hangs up during the stream', async () => {
  await app.db.raw(FILL_BIG)
  await hangUpWhen(app, '/export', async (response) => {
    const incoming = await response
    await new Promise((resolve) => incoming.once('data', resolve))
  })
  await transactionsEnded()
  expect(await exported()).toEqual([])
  expect(logged.lines().some((line) => line.msg === 'client disconnected mid-request: cancelled its running queries')).toBe(true)
})

test('sends a web stream read on the transaction, and commits after its last row', async () => {
  await app.db('big').insert([{ id: 1 }, { id: 2 }])
  const response = await request(app, '/export-web')
  expect([response.status, response.complete, response.body]).toEqual([200, true, '1\n2\n'])
  expect(await exported()).toEqual(['web'])
})

test('refuses a fetch Response, whose status it cannot see in time, and rolls back', async () => {
  const response = await request(app, '/export-response')
  expect(response.status).toBe(500)
  expect(JSON.parse(response.body).code).toBe('FST_FORK_SAFE_DB_ROUTE_TRANSACTION_PAYLOAD')
  await transactionsEnded()
  expect(await exported()).toEqual([])
})

test('commits a hijacked reply when the handler resolves, and reports no leak', async () => {
  const response = await request(app, '/hijacked', { method: 'POST' })
  expect([response.status, response.body]).toEqual([200, 'saved'])
  await transactionsEnded()
  expect(await exported()).toEqual(['hijacked'])
  expect(logged.lines().filter((line) => Number(line.level) >= 50)).toEqual([])
})

test('rolls back a hijacked reply whose handler throws', async () => {
  const response = await request(app, '/hijacked-then-failed', { method: 'POST' })
  expect([response.status, response.body]).toEqual([202, 'accepted'])
  await transactionsEnded()
  expect(await exported()).toEqual([])
})
