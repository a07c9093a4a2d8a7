import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import Fastify, { type FastifyInstance } from 'fastify'
import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise'
import forkSafeDb, { channels, type PoolDestroyEvent, type QueryEndEvent } from '../lib'
import { refusalOf } from '../lib/query/classify-error'
import { PrivateServer } from '../support/private-server'
import { TcpProxy } from '../support/tcp-proxy'
import { request } from './helpers/http-client'

// A server demoted under a pool (`SET GLOBAL read_only = 1` on a private server): each pooled
// connection fails at most one write, with a coded, retryable 503, and is closed, never lent
// again. The pool connects as a user without the READ ONLY ADMIN privilege (root ignores
// read_only).

const USER = 'ffsdb_writer'
const PASSWORD = 'pw-read-only-test-7c1e'
const SETTLE_MILLIS = 5000

let server: PrivateServer
let admin: Connection
let app: FastifyInstance | undefined

const ended: QueryEndEvent[] = []
const destroyed: PoolDestroyEvent[] = []
const onEnd = (message: unknown) => { ended.push(message as QueryEndEvent) }
const onDestroy = (message: unknown) => { destroyed.push(message as PoolDestroyEvent) }

beforeAll(async () => {
  server = await PrivateServer.start()
  admin = await createConnection({ host: '127.0.0.1', port: server.port, user: 'root', database: 'test' })
  await admin.query('CREATE USER ?@? IDENTIFIED BY ?', [USER, '127.0.0.1', PASSWORD])
  await admin.query('GRANT ALL ON test.* TO ?@?', [USER, '127.0.0.1'])
  await admin.query('CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, connection_id BIGINT NOT NULL)')
  subscribe(channels.queryEnd, onEnd)
  subscribe(channels.poolDestroy, onDestroy)
})

afterAll(async () => {
  unsubscribe(channels.queryEnd, onEnd)
  unsubscribe(channels.poolDestroy, onDestroy)
  await admin.end()
  await server.destroy()
})

beforeEach(async () => {
  ended.length = 0
  destroyed.length = 0
  await admin.query('SET GLOBAL read_only = 0')
})

afterEach(async () => {
  await app?.close()
  app = undefined
  await admin.query('SET GLOBAL read_only = 0')
})

async function start (options: Record<string, unknown> = {}): Promise<FastifyInstance> {
  const built = Fastify()
  app = built
  await built.register(forkSafeDb, {
    connection: { host: '127.0.0.1', port: server.port, user: USER, password: PASSWORD, database: 'test' },
    pool: { min: 4, max: 4 },
    warmup: true,
    ...options
  })
  built.post('/items', async (req) => {
    await req.db('items').insert({ connection_id: req.db.raw('CONNECTION_ID()') })
    return { ok: true }
  })
  await built.listen({ port: 0, host: '127.0.0.1' })
  return built
}

/** Sends `count` writes, `concurrency` at a time, each on a connection of its own. */
async function writes (target: FastifyInstance, count: number, concurrency: number) {
  const answers = []
  for (let sent = 0; sent < count; sent += concurrency) {
    answers.push(...await Promise.all(Array.from({ length: Math.min(concurrency, count - sent) }, async () => request(target, '/items', { method: 'POST' }))))
  }
  return answers
}

/** Thread ids of the pool's user on the server. */
async function serverIds (): Promise<number[]> {
  const [rows] = await admin.query<RowDataPacket[]>('SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?', [USER])
  return rows.map((row) => Number(row.ID))
}

/** Waits (bounded) until none of `ids` is on the server any more: a closed thread leaves PROCESSLIST soon after the socket. */
async function gone (ids: readonly number[]): Promise<number[]> {
  const deadline = Date.now() + SETTLE_MILLIS
  let left = (await serverIds()).filter((id) => ids.includes(id))
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    left = (await serverIds()).filter((id) => ids.includes(id))
  }
  return left
}

/** Resolves once every one of `ids` has been destroyed by the pool. */
async function destroyedAll (ids: readonly number[]): Promise<void> {
  if (ids.every((id) => destroyed.some((event) => event.connectionId === id))) return
  await new Promise<void>((resolve) => {
    const listener = () => {
      if (!ids.every((id) => destroyed.some((event) => event.connectionId === id))) return
      unsubscribe(channels.poolDestroy, listener)
      resolve()
    }
    subscribe(channels.poolDestroy, listener)
  })
}

test('after SET GLOBAL read_only = 1 each pooled connection fails at most one write, with a coded 503 and Retry-After, and is closed, never lent again', async () => {
  const target = await start()
  const before = await writes(target, 8, 4)
  expect(before.map((answer) => answer.status)).toEqual(Array(8).fill(200))
  await admin.query('SET GLOBAL read_only = 1')

  const after = await writes(target, 40, 4)
  for (const answer of after) {
    expect(answer.status).toBe(503)
    expect(answer.headers['retry-after']).toBe('1')
    expect(JSON.parse(answer.body)).toMatchObject({ code: 'FST_FORK_SAFE_DB_READ_ONLY', message: expect.stringContaining(`127.0.0.1:${server.port}`) })
  }
  const failures = ended.filter((event) => event.errorCode === 'FST_FORK_SAFE_DB_READ_ONLY')
  const failed = failures.map((event) => event.connectionId as number)
  // At most one failed write per connection: each was retired after it.
  expect(new Set(failed).size).toBe(failed.length)
  expect(failed).toHaveLength(40)
  // None of them ran another statement after its failure.
  for (const failure of failures) {
    const later = ended.slice(ended.indexOf(failure) + 1).filter((event) => event.connectionId === failure.connectionId)
    expect(later).toEqual([])
  }
  await destroyedAll(failed)
  expect(destroyed.filter((event) => failed.includes(event.connectionId as number)).map((event) => event.reason)).toEqual(failed.map(() => 'retired'))
  expect(await gone(failed)).toEqual([])
})

test('the coded error keeps the server\'s errno, SQL state and message, and the driver\'s error as its cause', async () => {
  const target = await start({ pool: { min: 1, max: 1 } })
  await admin.query('SET GLOBAL read_only = 1')
  const error = await target.db('items').insert({ connection_id: 0 }).then(() => undefined, (failure: unknown) => failure)
  expect(error).toMatchObject({
    code: 'FST_FORK_SAFE_DB_READ_ONLY',
    statusCode: 503,
    errno: 1290,
    sqlState: 'HY000',
    sqlMessage: expect.stringContaining('--read-only'),
    cause: expect.objectContaining({ code: 'ER_OPTION_PREVENTS_STATEMENT' })
  })
  expect((error as Error).message).not.toContain(PASSWORD)
  expect((error as Error).message).not.toContain(USER)
})

test('a write in the user\'s own read-only transaction gets the server\'s error and keeps its connection', async () => {
  const target = await start({ pool: { min: 1, max: 1 } })
  const [[first]] = await target.db.raw('SELECT CONNECTION_ID() AS id') as [Array<{ id: number }>]
  await expect(target.db.transaction(async (trx) => trx('items').insert({ connection_id: 0 }), { readOnly: true }))
    .rejects.toMatchObject({ code: 'ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION', errno: 1792 })
  const [[second]] = await target.db.raw('SELECT CONNECTION_ID() AS id') as [Array<{ id: number }>]
  expect(second?.id).toBe(first?.id)
  expect(destroyed).toEqual([])
})

test('a write in a read-only transaction on a demoted server is FST_FORK_SAFE_DB_READ_ONLY, and its connection is retired', async () => {
  const target = await start({ pool: { min: 1, max: 1 } })
  const [[first]] = await target.db.raw('SELECT CONNECTION_ID() AS id') as [Array<{ id: number }>]
  await admin.query('SET GLOBAL read_only = 1')
  // MariaDB checks --read-only first (1290); an Aurora reader answers 1792, which the plugin
  // checks with the server before blaming it.
  await expect(target.db.transaction(async (trx) => trx('items').insert({ connection_id: 0 }), { readOnly: true }))
    .rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_TRANSACTION_ABORTED', commitSent: false, cause: { code: 'FST_FORK_SAFE_DB_READ_ONLY' } })
  const [[second]] = await target.db.raw('SELECT CONNECTION_ID() AS id') as [Array<{ id: number }>]
  expect(second?.id).not.toBe(first?.id)
  expect(destroyed).toEqual([expect.objectContaining({ connectionId: first?.id, reason: 'retired' })])
})

test('a 1290 for another option than --read-only (--secure-file-priv) is not a read-only answer', () => {
  // No server here runs with --secure-file-priv set (a start-up option): the server's words,
  // as MariaDB and MySQL send them, are classified directly.
  const answer = (option: string) => Object.assign(new Error('Database query failed (ER_OPTION_PREVENTS_STATEMENT)'), {
    code: 'ER_OPTION_PREVENTS_STATEMENT', errno: 1290, sqlMessage: `The MariaDB server is running with the ${option} option so it cannot execute this statement`
  })
  expect(refusalOf(answer('--secure-file-priv'))).toBeUndefined()
  expect(refusalOf(answer('--skip-grant-tables'))).toBeUndefined()
  expect(refusalOf(answer('--read-only'))).toBe('read-only')
  expect(refusalOf(answer('--super-read-only'))).toBe('read-only')
})

test('with role primary, the first read-only answer retires every connection to that host', async () => {
  const target = await start({ role: 'primary' })
  const warm = await serverIds()
  expect(warm).toHaveLength(4)
  await admin.query('SET GLOBAL read_only = 1')
  const [answer] = await writes(target, 1, 1)
  expect(answer?.status).toBe(503)
  await destroyedAll(warm)
  expect(await gone(warm)).toEqual([])
})

test('with queryTimeoutMillis 0, a write outside a request on a demoted server is FST_FORK_SAFE_DB_READ_ONLY, and its connection is retired', async () => {
  const target = await start({ pool: { min: 1, max: 1 }, queryTimeoutMillis: 0 })
  const [[first]] = await target.db.raw('SELECT CONNECTION_ID() AS id') as [Array<{ id: number }>]
  await admin.query('SET GLOBAL read_only = 1')
  await expect(target.db('items').insert({ connection_id: 0 })).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_READ_ONLY', errno: 1290 })
  const [[second]] = await target.db.raw('SELECT CONNECTION_ID() AS id') as [Array<{ id: number }>]
  expect(second?.id).not.toBe(first?.id)
  expect(destroyed).toEqual([expect.objectContaining({ connectionId: first?.id, reason: 'retired' })])
})

test('a streamed write refused by a demoted server retires its connection', async () => {
  const target = await start({ pool: { min: 1, max: 1 } })
  const [[first]] = await target.db.raw('SELECT CONNECTION_ID() AS id') as [Array<{ id: number }>]
  await admin.query('SET GLOBAL read_only = 1')
  const streamed = target.db('items').insert({ connection_id: 0 }).stream()
  await expect(new Promise((resolve, reject) => { streamed.on('error', reject); streamed.on('end', resolve); streamed.resume() }))
    .rejects.toMatchObject({ errno: 1290 })
  const [[second]] = await target.db.raw('SELECT CONNECTION_ID() AS id') as [Array<{ id: number }>]
  expect(second?.id).not.toBe(first?.id)
  expect(destroyed).toEqual([expect.objectContaining({ connectionId: first?.id, reason: 'retired' })])
})

test('a 1792 whose server freezes before answering the role check fails with the server\'s error within the ping timeout', async () => {
  const proxy = await TcpProxy.start({ target: { host: '127.0.0.1', port: server.port } })
  try {
    const target = await start({ connection: { host: '127.0.0.1', port: proxy.port, user: USER, password: PASSWORD, database: 'test' }, pool: { min: 1, max: 1, acquireTimeoutMillis: 2000 } })
    // The role check the 1792 asks for never gets an answer (a server frozen right after the 1792).
    proxy.swallowQuery = /@@global\.read_only/
    await expect(target.db.transaction(async (trx) => trx('items').insert({ connection_id: 0 }), { readOnly: true }))
      .rejects.toMatchObject({ errno: 1792 })
  } finally {
    await app?.close()
    app = undefined
    await proxy.close()
  }
})
