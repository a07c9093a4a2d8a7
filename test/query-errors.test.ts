import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// Bound values and server messages that quote them must reach neither the HTTP client nor the
// log; handlers still match on the driver's code.

const fixture = perTestUser({ ownDatabase: true })
const secretEmail = 'alice-s3cr3t-7f41@example.com'
const secretToken = 'tok-s3cr3t-91c2e0'

let logged: LoggedApp
let app: FastifyInstance

beforeEach(async () => {
  const admin = fixture.database.admin
  await admin.query(`CREATE TABLE \`${fixture.user.user}\`.accounts (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100) NOT NULL UNIQUE)`)
  await admin.query(`INSERT INTO \`${fixture.user.user}\`.accounts (email) VALUES (?)`, [secretEmail])
  logged = buildApp()
  app = logged.app
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 2 } })
})
afterEach(async () => { await app.close() })

function everythingSent (bodies: string[]): string {
  return [...bodies, logged.text()].join('\n')
}

test('answers a duplicate-key insert with a generic 500 that names the code, not the value', async () => {
  app.post('/accounts', async (request) => request.db('accounts').insert({ email: secretEmail }))
  const response = await app.inject({ method: 'POST', url: '/accounts' })
  expect(response.statusCode).toBe(500)
  expect(response.json()).toEqual({ statusCode: 500, code: 'ER_DUP_ENTRY', error: 'Internal Server Error', message: 'Database query failed (ER_DUP_ENTRY)' })
  expect(everythingSent([response.body])).not.toContain(secretEmail)
})

test('logs the failed statement with placeholders and the server message with values redacted', async () => {
  app.post('/accounts', async (request) => request.db('accounts').insert({ email: secretEmail }))
  await app.inject({ method: 'POST', url: '/accounts' })
  const line = logged.lines().find((entry) => (entry.err as { code?: string } | undefined)?.code === 'ER_DUP_ENTRY')
  expect(line?.err).toMatchObject({
    query: 'insert into `accounts` (`email`) values (?)',
    sqlMessage: expect.stringContaining('Duplicate entry \'[redacted]\''),
    detail: expect.stringMatching(/^insert into `accounts` \(`email`\) values \(\?\) - Duplicate entry '\[redacted\]'/)
  })
  expect(logged.text()).not.toContain(secretEmail)
})

test('keeps the driver code and errno for handlers that catch the error', async () => {
  app.post('/accounts', async (request, reply) => {
    try {
      await request.db('accounts').insert({ email: secretEmail })
      return reply.code(201).send()
    } catch (error) {
      const { code, errno, message, sql } = error as { code: string, errno: number, message: string, sql?: string }
      return reply.code(409).send({ code, errno, message, sql: sql ?? null })
    }
  })
  const response = await app.inject({ method: 'POST', url: '/accounts' })
  expect(response.statusCode).toBe(409)
  expect(response.json()).toEqual({ code: 'ER_DUP_ENTRY', errno: 1062, message: 'Database query failed (ER_DUP_ENTRY)', sql: null })
})

test('keeps bound values of a failing raw query and a failing transaction out of responses and logs', async () => {
  app.get('/raw', async (request) => request.db.raw('SELECT * FROM missing_table WHERE token = ?', [secretToken]))
  app.get('/transaction', async (request) => request.db.transaction(async (trx) => {
    await trx('accounts').insert({ email: 'someone-new@example.com' })
    await trx('accounts').insert({ email: secretEmail })
  }))
  const raw = await app.inject('/raw')
  const transaction = await app.inject('/transaction')
  expect(raw.json()).toMatchObject({ statusCode: 500, code: 'ER_NO_SUCH_TABLE', message: `Database query failed (ER_NO_SUCH_TABLE): Table '${fixture.user.user}.missing_table' doesn't exist` })
  expect(transaction.json()).toMatchObject({ statusCode: 500, code: 'ER_DUP_ENTRY' })
  const sent = everythingSent([raw.body, transaction.body])
  expect(sent).not.toContain(secretToken)
  expect(sent).not.toContain(secretEmail)
  expect(sent).not.toContain('someone-new@example.com')
  // The transaction was rolled back: the first insert is gone.
  const [rows] = await fixture.database.admin.query(`SELECT COUNT(*) AS n FROM \`${fixture.user.user}\`.accounts`) as unknown as [Array<{ n: number }>]
  expect(Number(rows[0].n)).toBe(1)
})

test('answers a query that outlives its .timeout() with a coded 503 that keeps the bound value out', async () => {
  app.get('/slow', async (request) => request.db.raw('SELECT SLEEP(2) AS slept, ? AS token', [secretToken]).timeout(100, { cancel: true }))
  const response = await app.inject('/slow')
  expect(response.statusCode).toBe(503)
  expect(response.headers['retry-after']).toBe('1')
  expect(response.json()).toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT', message: 'fastify-fork-safe-db: the statement did not finish within 100 ms and was cancelled on the server (KILL QUERY)' })
  expect(everythingSent([response.body])).not.toContain(secretToken)
})

test('never lets the server ask for a local file: LOCAL_FILES is withdrawn unless opted into', async () => {
  app.get('/load', async (request) => {
    try {
      await request.db.raw('LOAD DATA LOCAL INFILE \'/etc/hostname\' INTO TABLE accounts (email)')
      return { errno: null }
    } catch (error) {
      return { errno: (error as { errno?: number }).errno }
    }
  })
  const response = await app.inject('/load')
  // The server refuses because the client did not announce the capability: MariaDB says 4166
  // (local infile capability disabled), MySQL 1148 (command not allowed). Had it been announced,
  // the server would have asked for the file and mysql2 would have failed with no errno.
  expect([1148, 4166]).toContain(response.json().errno)
})

describe('the server\'s own words', () => {
  test('stay in the message when they quote no bound value', async () => {
    app.get('/missing-table', async (request) => request.db('unknown_table').where({ id: 42 }).first())
    app.post('/null-name', async (request) => request.db.raw('INSERT INTO accounts (email) VALUES (?)', [null]))
    const missing = await app.inject('/missing-table')
    expect(missing.json()).toMatchObject({ code: 'ER_NO_SUCH_TABLE', message: `Database query failed (ER_NO_SUCH_TABLE): Table '${fixture.user.user}.unknown_table' doesn't exist` })
    const nullName = await app.inject({ method: 'POST', url: '/null-name' })
    expect(nullName.json()).toMatchObject({ code: 'ER_BAD_NULL_ERROR', message: 'Database query failed (ER_BAD_NULL_ERROR): Column \'email\' cannot be null' })
  })

  test('are left out when they quote a bound value, even one the server cut short', async () => {
    const long = `${'x'.repeat(80)}-${secretToken}`
    await fixture.database.admin.query(`CREATE TABLE \`${fixture.user.user}\`.codes (code VARCHAR(200) PRIMARY KEY)`)
    await fixture.database.admin.query(`INSERT INTO \`${fixture.user.user}\`.codes VALUES (?)`, [long])
    app.post('/codes', async (request) => request.db('codes').insert({ code: long }))
    app.post('/short', async (request) => request.db.raw('INSERT INTO accounts (id, email) VALUES (?, ?)', [1, 'x1@example.com']))
    app.post('/short-only', async (request) => request.db.raw('INSERT INTO accounts (id, email) VALUES (?, ?)', [1, 'x']))
    const duplicate = await app.inject({ method: 'POST', url: '/codes' })
    expect(duplicate.json()).toMatchObject({ code: 'ER_DUP_ENTRY', message: 'Database query failed (ER_DUP_ENTRY)' })
    const shortValue = await app.inject({ method: 'POST', url: '/short' })
    expect(shortValue.json()).toMatchObject({ code: 'ER_DUP_ENTRY', message: 'Database query failed (ER_DUP_ENTRY)' })
    // Only short values: "Duplicate entry '1' for key 'PRIMARY'" still quotes one.
    const shortOnly = await app.inject({ method: 'POST', url: '/short-only' })
    expect(shortOnly.json()).toMatchObject({ code: 'ER_DUP_ENTRY', message: 'Database query failed (ER_DUP_ENTRY)' })
    expect(everythingSent([duplicate.body, shortValue.body])).not.toContain(secretToken)
  })
})
