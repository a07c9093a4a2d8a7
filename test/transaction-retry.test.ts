import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { FastifyInstance } from 'fastify'
import { createConnection } from 'mysql2/promise'
import forkSafeDb, { channels, type ForkSafeDbOptions, type TransactionBeginEvent } from '../lib'
import { backoffMillis, MAX_BACKOFF_MILLIS } from '../lib/client/transaction-retry'
import { PrivateServer } from '../support/private-server'
import { TcpProxy } from '../support/tcp-proxy'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { hangUpWhen } from './helpers/http-client'
import { barrier } from './helpers/barrier'

// `db.transaction(fn, { retries })` runs the callback again on a fresh transaction when nothing
// was committed (TRANSACTION_ABORTED), and never once the COMMIT was sent. Real servers: the
// shared one for deadlocks and losses (through the TCP proxy), a private one for read-only.

const fixture = perTestUser({ ownDatabase: true })

let logged: LoggedApp | undefined
let app: FastifyInstance | undefined
let proxy: TcpProxy | undefined

beforeEach(async () => {
  await fixture.database.admin.query(`CREATE TABLE \`${fixture.user.user}\`.accounts (id INT PRIMARY KEY, balance INT NOT NULL) ENGINE=InnoDB`)
  await fixture.database.admin.query(`INSERT INTO \`${fixture.user.user}\`.accounts VALUES (1, 100), (2, 100)`)
  await fixture.database.admin.query(`CREATE TABLE \`${fixture.user.user}\`.items (id INT PRIMARY KEY) ENGINE=InnoDB`)
})
afterEach(async () => {
  await app?.close()
  app = undefined
  logged = undefined
  await proxy?.close()
  proxy = undefined
})

async function register (options: Partial<ForkSafeDbOptions> = {}, connection: string = fixture.user.url): Promise<FastifyInstance> {
  logged = buildApp()
  app = logged.app
  await app.register(forkSafeDb, { connection, pool: { min: 1, max: 2 }, ...options })
  return app
}

async function throughProxy (): Promise<string> {
  proxy = await TcpProxy.start({ target: { host: fixture.user.connection.host, port: fixture.user.connection.port } })
  return proxy.urlFor(fixture.user.url)
}

async function itemIds (): Promise<number[]> {
  const [rows] = await fixture.database.admin.query(`SELECT id FROM \`${fixture.user.user}\`.items ORDER BY id`) as unknown as [Array<{ id: number }>]
  return rows.map((row) => row.id)
}

/** The begin events published while `run` runs. */
async function begins (run: () => Promise<unknown>): Promise<TransactionBeginEvent[]> {
  const seen: TransactionBeginEvent[] = []
  const listener = (message: unknown) => seen.push(message as TransactionBeginEvent)
  subscribe(channels.transactionBegin, listener)
  try {
    await run()
  } finally {
    unsubscribe(channels.transactionBegin, listener)
  }
  return seen
}

test('two transactions that deadlock both succeed with retries, and both effects are there', async () => {
  const instance = await register()
  const bothLocked = barrier(2)
  const transfer = (first: number, second: number, amount: number) => instance.db.transaction(async (trx) => {
    await trx('accounts').where({ id: first }).increment('balance', amount)
    await bothLocked()
    await trx('accounts').where({ id: second }).increment('balance', amount)
  }, { retries: 3 })
  const seen = await begins(() => Promise.all([transfer(1, 2, 1), transfer(2, 1, 10)]))
  expect(await instance.db('accounts').orderBy('id').pluck('balance')).toEqual([111, 111])
  // The victim ran again as a new transaction: its begin says which attempt.
  expect(seen.map((event) => event.attempt).sort()).toEqual([1, 1, 2])
  const retried = logged?.lines().filter((line) => line.msg === 'transaction aborted before COMMIT; running it again')
  expect(retried).toEqual([expect.objectContaining({ level: 20, attempt: 2, code: 'FST_FORK_SAFE_DB_DEADLOCK' })])
})

test('a transaction whose connection is lost before COMMIT commits once when retried', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  let runs = 0
  await instance.db.transaction(async (trx) => {
    runs += 1
    await trx('items').insert({ id: 1 })
    if (runs === 1) proxy?.resetAll()
    await trx.raw('SELECT 1')
  }, { retries: 3 })
  expect(runs).toBe(2)
  expect(await itemIds()).toEqual([1])
})

test('a transaction whose BEGIN loses its connection is TRANSACTION_ABORTED, nothing of it committed', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  if (proxy !== undefined) proxy.resetOnQuery = /BEGIN/
  let runs = 0
  const outcome = instance.db.transaction(async (trx) => {
    runs += 1
    await trx('items').insert({ id: 1 })
  })
  await expect(outcome).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_TRANSACTION_ABORTED', commitSent: false, cause: { code: 'FST_FORK_SAFE_DB_CONNECTION_LOST' } })
  expect(runs).toBe(0)
  expect(await itemIds()).toEqual([])
})

test('a transaction whose BEGIN loses its connection commits once when retried', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  if (proxy !== undefined) {
    const target = proxy
    target.resetOnQuery = /BEGIN/
    // Only the first BEGIN is lost: the retry's goes through.
    target.onClientData = (chunk) => { if (chunk.includes('BEGIN')) setImmediate(() => { target.resetOnQuery = undefined }) }
  }
  let runs = 0
  const seen = await begins(() => instance.db.transaction(async (trx) => {
    runs += 1
    await trx('items').insert({ id: 1 })
  }, { retries: 3 }))
  expect(runs).toBe(1)
  // The first attempt never began (its BEGIN failed): the callback ran once, in the second.
  expect(seen.map((event) => event.attempt)).toEqual([2])
  expect(await itemIds()).toEqual([1])
})

test('a transaction whose COMMIT answer is lost is never retried: COMMIT_UNKNOWN after one run', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  let runs = 0
  const outcome = instance.db.transaction(async (trx) => {
    runs += 1
    await trx('items').insert({ id: runs })
    if (proxy !== undefined) proxy.loseReplyToQuery = /COMMIT/
  }, { retries: 3 })
  await expect(outcome).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_COMMIT_UNKNOWN', commitSent: true })
  expect(runs).toBe(1)
  expect(await itemIds()).toEqual([1])
})

test('gives up after its retries with the last TRANSACTION_ABORTED', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  let runs = 0
  const outcome = instance.db.transaction(async (trx) => {
    runs += 1
    await trx('items').insert({ id: 1 })
    proxy?.resetAll()
    await trx.raw('SELECT 1')
  }, { retries: 2 })
  await expect(outcome).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_TRANSACTION_ABORTED', commitSent: false })
  expect(runs).toBe(3)
  expect(await itemIds()).toEqual([])
})

test('an error of the callback\'s own is not retried', async () => {
  const instance = await register()
  let runs = 0
  const outcome = instance.db.transaction(async () => {
    runs += 1
    throw new Error('not a database failure')
  }, { retries: 3 })
  await expect(outcome).rejects.toThrow('not a database failure')
  expect(runs).toBe(1)
})

test('refuses retries on the promise form with FST_FORK_SAFE_DB_INVALID_OPTION, beginning nothing', async () => {
  const instance = await register()
  await expect(instance.db.transaction({ retries: 3 })).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_INVALID_OPTION', message: expect.stringContaining('needs a callback') })
  await expect(instance.db.transactionProvider({ retries: 1 })()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_INVALID_OPTION' })
})

test('refuses retries on a savepoint with FST_FORK_SAFE_DB_INVALID_OPTION', async () => {
  const instance = await register()
  const outcome = instance.db.transaction(async (trx) => trx.transaction(async () => {}, { retries: 2 }))
  await expect(outcome).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_INVALID_OPTION', message: expect.stringContaining('savepoint') })
})

test.each([[-1], [1.5], [11], ['3']])('refuses retries of %p with FST_FORK_SAFE_DB_INVALID_OPTION', async (retries) => {
  const instance = await register()
  await expect(instance.db.transaction(async () => {}, { retries: retries as number })).rejects.toMatchObject({
    code: 'FST_FORK_SAFE_DB_INVALID_OPTION',
    message: expect.stringContaining('retries must be an integer from 0 to 10')
  })
})

test('retries: 0 behaves as knex does: one run', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  let runs = 0
  const outcome = instance.db.transaction(async (trx) => {
    runs += 1
    await trx('items').insert({ id: 1 })
    proxy?.resetAll()
    await trx.raw('SELECT 1')
  }, { retries: 0 })
  await expect(outcome).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_TRANSACTION_ABORTED' })
  expect(runs).toBe(1)
})

test('request.db does not run a transaction again once its client has hung up', async () => {
  const through = await throughProxy()
  const instance = await register({}, through)
  let runs = 0
  let lost!: () => void
  const firstRunLost = new Promise<void>((resolve) => { lost = resolve })
  let settle!: (outcome: unknown) => void
  const settled = new Promise((resolve) => { settle = resolve })
  instance.get('/write', async (request) => {
    const hungUp = new Promise((resolve) => request.raw.socket.once('close', resolve))
    const outcome = request.db.transaction(async (trx) => {
      runs += 1
      await trx('items').insert({ id: runs })
      proxy?.resetAll()
      // The run fails only once the server has seen its client go.
      await trx.raw('SELECT 1').catch(async (error: unknown) => { lost(); await hungUp; throw error })
    }, { retries: 3 })
    outcome.then(settle, settle)
    return outcome
  })
  await instance.listen({ port: 0, host: '127.0.0.1' })
  await hangUpWhen(instance, '/write', async () => firstRunLost)
  // The hang-up rolled the open transaction back with the request scope's reason: not retryable.
  expect(await settled).toMatchObject({ code: 'FST_FORK_SAFE_DB_TRANSACTION_ROLLED_BACK' })
  expect(runs).toBe(1)
  expect(await itemIds()).toEqual([])
})

test('back-off is a uniform wait below min(500 ms, 10 ms x 2^(attempt-1))', () => {
  expect(backoffMillis(1, () => 0.999)).toBeCloseTo(9.99)
  expect(backoffMillis(3, () => 0.5)).toBe(20)
  expect(backoffMillis(20, () => 0.999)).toBeLessThan(MAX_BACKOFF_MILLIS)
  expect(backoffMillis(4, () => 0)).toBe(0)
})

describe('on a server that becomes read-only', () => {
  let server: PrivateServer | undefined
  const url = () => `mysql://writer:writer@127.0.0.1:${server?.port ?? 0}/test`

  beforeAll(async () => {
    server = await PrivateServer.start()
    const admin = await createConnection(server.url)
    // Not root: read_only does not stop a user with SUPER (READ_ONLY ADMIN).
    await admin.query('CREATE USER writer@\'%\' IDENTIFIED BY \'writer\'')
    await admin.query('GRANT ALL ON test.* TO writer@\'%\'')
    await admin.query('CREATE TABLE test.items (id INT PRIMARY KEY) ENGINE=InnoDB')
    await admin.end()
  }, 60_000)
  afterAll(async () => { await server?.destroy() })

  async function setReadOnly (on: boolean): Promise<void> {
    const admin = await createConnection(server?.url ?? '')
    await admin.query(`SET GLOBAL read_only = ${on ? 1 : 0}`)
    await admin.end()
  }

  afterEach(async () => {
    await setReadOnly(false)
    const admin = await createConnection(server?.url ?? '')
    await admin.query('DELETE FROM test.items')
    await admin.end()
  })

  test('a write refused as read-only inside a transaction rejects it with TRANSACTION_ABORTED, its cause errno 1290', async () => {
    const instance = await register({}, url())
    const outcome = instance.db.transaction(async (trx) => {
      await trx.raw('SELECT 1')
      await setReadOnly(true)
      await trx('items').insert({ id: 1 })
    })
    await expect(outcome).rejects.toMatchObject({
      code: 'FST_FORK_SAFE_DB_TRANSACTION_ABORTED',
      commitSent: false,
      cause: expect.objectContaining({ errno: 1290 })
    })
  })

  test('retried once the host takes writes again, it commits', async () => {
    const instance = await register({}, url())
    let runs = 0
    const seen = await begins(() => instance.db.transaction(async (trx) => {
      runs += 1
      await trx.raw('SELECT 1')
      // The first run finds the host demoted; before the second writes, it is writable again.
      await setReadOnly(runs === 1)
      await trx('items').insert({ id: 1 })
    }, { retries: 2 }))
    expect(runs).toBe(2)
    expect(seen.map((event) => event.attempt)).toEqual([1, 2])
    expect(await instance.db('items').pluck('id')).toEqual([1])
  })
})
