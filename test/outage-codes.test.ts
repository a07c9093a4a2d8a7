import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { Connection } from 'mysql2/promise'
import { createConnection } from 'mysql2/promise'
import forkSafeDb, { type ForkSafeDbOptions } from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { freePort } from '../support/private-server'
import { TcpProxy } from '../support/tcp-proxy'

// Every failure that comes from the database being unreachable or a connection being lost is a
// coded 503 with Retry-After, the code saying which; a deadlock and a lock-wait timeout keep the
// server's words and are coded and retryable too. Real requests through a socket; network faults
// through the TCP proxy (a cut and a black hole), locks taken by two real connections.

const fixture = perTestUser({ ownDatabase: true })

let app: FastifyInstance | undefined
let proxy: TcpProxy | undefined
let other: Connection | undefined

beforeEach(async () => {
  await fixture.database.admin.query(`CREATE TABLE \`${fixture.user.user}\`.accounts (id INT PRIMARY KEY, balance INT NOT NULL) ENGINE=InnoDB`)
  await fixture.database.admin.query(`INSERT INTO \`${fixture.user.user}\`.accounts VALUES (1, 100), (2, 100)`)
})
afterEach(async () => {
  await other?.end()
  other = undefined
  await app?.close()
  app = undefined
  await proxy?.close()
  proxy = undefined
})

async function throughProxy (): Promise<TcpProxy> {
  proxy = await TcpProxy.start({ target: { host: fixture.user.connection.host, port: fixture.user.connection.port } })
  return proxy
}

async function serve (options: ForkSafeDbOptions, routes: (instance: FastifyInstance) => void): Promise<string> {
  app = buildApp().app
  await app.register(forkSafeDb, options)
  routes(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  return `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
}

interface Answer { status: number, retryAfter: string | null, body: Record<string, unknown> }

/**
 * One request on a connection of its own, closed with the response: fetch() would keep its
 * connection alive in a global pool, and a test file would end with it still open.
 */
function send (url: string, init: { method?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const outgoing = http.request(url, { method: init.method ?? 'GET', agent: false, headers: { 'content-length': 0 } }, (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.once('error', reject)
      response.once('end', () => {
        const retryAfter = response.headers['retry-after']
        resolve({ status: response.statusCode ?? 0, retryAfter: typeof retryAfter === 'string' ? retryAfter : null, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> })
      })
    })
    outgoing.once('error', reject)
    outgoing.end()
  })
}

/** Resolves once the proxy has seen a client send a chunk containing `text`. */
function sent (through: TcpProxy, text: string): Promise<void> {
  return new Promise((resolve) => {
    through.onClientData = (chunk) => {
      if (!chunk.toString('latin1').includes(text)) return
      through.onClientData = undefined
      resolve()
    }
  })
}

test('answers a statement whose connection is cut in flight with 503 FST_FORK_SAFE_DB_CONNECTION_LOST and Retry-After, saying its outcome is unknown', async () => {
  const through = await throughProxy()
  const base = await serve({ connection: through.urlFor(fixture.user.url), pool: { min: 1, max: 1 } }, (instance) => {
    instance.get('/slow', async (request) => request.db.raw('SELECT SLEEP(5) AS cut_me'))
  })
  const statementSent = sent(through, 'cut_me')
  const answer = send(`${base}/slow`)
  await statementSent
  through.resetAll()
  expect(await answer).toMatchObject({
    status: 503,
    retryAfter: '1',
    body: { code: 'FST_FORK_SAFE_DB_CONNECTION_LOST', message: expect.stringMatching(/was lost \((ECONNRESET|PROTOCOL_CONNECTION_LOST|EPIPE)\) while a statement ran; whether the statement took effect is unknown$/) }
  })
})

test('answers a route transaction whose COMMIT is cut with 500 FST_FORK_SAFE_DB_COMMIT_UNKNOWN and no Retry-After, since it may have committed', async () => {
  const through = await throughProxy()
  const base = await serve({ connection: through.urlFor(fixture.user.url), pool: { min: 1, max: 1 } }, (instance) => {
    instance.post('/credit', { db: { transaction: true } }, async (request) => {
      await request.db('accounts').where({ id: 1 }).increment('balance', 1)
      return { ok: true }
    })
  })
  through.resetOnQuery = /COMMIT/
  expect(await send(`${base}/credit`, { method: 'POST' })).toMatchObject({
    status: 500,
    retryAfter: null,
    body: { code: 'FST_FORK_SAFE_DB_COMMIT_UNKNOWN', message: expect.stringMatching(/after the transaction's COMMIT was sent \(FST_FORK_SAFE_DB_CONNECTION_LOST\); whether it was committed is unknown$/) }
  })
})

test('answers the first request that needs a new connection, while new connections go unanswered, with 503 FST_FORK_SAFE_DB_CONNECT_TIMEOUT', async () => {
  const through = await throughProxy()
  through.blackhole = true
  const target = new URL(through.urlFor(fixture.user.url))
  const base = await serve({
    connection: { ...fixture.user.connection, host: target.hostname, port: Number(target.port), connectTimeout: 300 },
    warmup: false,
    pool: { min: 0, max: 1, acquireTimeoutMillis: 3000 }
  }, (instance) => {
    instance.get('/ping', async (request) => request.db.raw('SELECT 1'))
  })
  expect(await send(`${base}/ping`)).toMatchObject({
    status: 503,
    retryAfter: '1',
    body: { code: 'FST_FORK_SAFE_DB_CONNECT_TIMEOUT', message: expect.stringContaining('no statement was sent') }
  })
})

test('answers a request with 503 FST_FORK_SAFE_DB_CONNECT_REFUSED and Retry-After when the database refuses connections', async () => {
  const base = await serve({ connection: { ...fixture.user.connection, port: await freePort() }, warmup: false }, (instance) => {
    instance.get('/ping', async (request) => request.db.raw('SELECT 1'))
  })
  expect(await send(`${base}/ping`)).toMatchObject({
    status: 503,
    retryAfter: '1',
    body: { code: 'FST_FORK_SAFE_DB_CONNECT_REFUSED', message: expect.stringContaining('(ECONNREFUSED)') }
  })
})

/** Resolves once `count` transactions of the test's user wait for a row lock. */
async function lockWaits (count: number): Promise<void> {
  for (;;) {
    const [rows] = await fixture.database.admin.query(
      'SELECT COUNT(*) AS waiting FROM information_schema.INNODB_TRX t JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id WHERE t.trx_state = \'LOCK WAIT\' AND p.USER = ?',
      [fixture.user.user]
    ) as unknown as [Array<{ waiting: number }>]
    if (Number(rows[0].waiting) >= count) return
  }
}

test('answers a transaction chosen as a deadlock\'s victim with 503 FST_FORK_SAFE_DB_DEADLOCK and Retry-After, in the server\'s words', async () => {
  let lockedFirst!: () => void
  const firstLocked = new Promise<void>((resolve) => { lockedFirst = resolve })
  let proceed!: () => void
  const goOn = new Promise<void>((resolve) => { proceed = resolve })
  const base = await serve({ connection: fixture.user.url, pool: { min: 1, max: 1 } }, (instance) => {
    instance.post('/transfer', { db: { transaction: true } }, async (request) => {
      await request.db('accounts').where({ id: 1 }).update({ balance: 90 })
      lockedFirst()
      await goOn
      await request.db('accounts').where({ id: 2 }).update({ balance: 110 })
      return { ok: true }
    })
  })
  const answer = send(`${base}/transfer`, { method: 'POST' })
  await firstLocked
  // The other connection changes more rows, so the server picks the route's transaction as the victim.
  other = await createConnection({ uri: fixture.user.url })
  await other.query('BEGIN')
  await other.query('UPDATE accounts SET balance = balance + 1 WHERE id = 2')
  const otherWaits = other.query('UPDATE accounts SET balance = balance - 1 WHERE id = 1')
  await lockWaits(1)
  proceed()
  expect(await answer).toMatchObject({
    status: 503,
    retryAfter: '1',
    body: { code: 'FST_FORK_SAFE_DB_DEADLOCK', message: expect.stringContaining('Deadlock found when trying to get lock') }
  })
  await otherWaits
  await other.query('ROLLBACK')
})

test('answers a statement that waited too long for a row lock with 503 FST_FORK_SAFE_DB_LOCK_WAIT_TIMEOUT, keeping errno, sqlState and the server\'s words', async () => {
  let caught: unknown
  const base = await serve({ connection: fixture.user.url, pool: { min: 1, max: 1 } }, (instance) => {
    instance.post('/debit', { db: { transaction: true } }, async (request) => {
      await request.db.raw('SET SESSION innodb_lock_wait_timeout = 1')
      try {
        return await request.db('accounts').where({ id: 1 }).update({ balance: 50 })
      } catch (error) {
        caught = error
        throw error
      }
    })
  })
  other = await createConnection({ uri: fixture.user.url })
  await other.query('BEGIN')
  await other.query('UPDATE accounts SET balance = 0 WHERE id = 1')
  expect(await send(`${base}/debit`, { method: 'POST' })).toMatchObject({
    status: 503,
    retryAfter: '1',
    body: { code: 'FST_FORK_SAFE_DB_LOCK_WAIT_TIMEOUT', message: expect.stringContaining('Lock wait timeout exceeded') }
  })
  expect(caught).toMatchObject({ errno: 1205, sqlState: 'HY000', cause: expect.objectContaining({ code: 'ER_LOCK_WAIT_TIMEOUT' }) })
  await other.query('ROLLBACK')
})
