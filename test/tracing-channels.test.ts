import { AsyncLocalStorage } from 'node:async_hooks'
import { tracingChannel, type TracingChannelSubscribers } from 'node:diagnostics_channel'
import { createServer } from 'node:net'
import { inspect } from 'node:util'
import type { FastifyInstance } from 'fastify'
import forkSafeDb, { tracingChannels, type QueryTraceContext } from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { request } from './helpers/http-client'

// The plugin's TracingChannels, subscribed as a tracer would (by the exported names, all five
// phases), against a real server. Every context any test saw is swept, with the error it
// carries, for the test user's password, its connection URL and a bound value.

const fixture = perTestUser({ ownDatabase: true })
const SECRET = 'bound-s3cr3t-9d2c71e4'
const PHASES = ['start', 'end', 'asyncStart', 'asyncEnd', 'error'] as const
type Phase = typeof PHASES[number]
type Name = keyof typeof tracingChannels

interface Seen { name: Name, phase: Phase, context: Record<string, unknown> }

let seen: Seen[] = []
const subscriptions = (Object.keys(tracingChannels) as Name[]).map((name) => {
  const handlers = Object.fromEntries(PHASES.map((phase) => [phase, (message: unknown) => {
    seen.push({ name, phase, context: message as Record<string, unknown> })
  }])) as unknown as TracingChannelSubscribers<object>
  return { channel: tracingChannel<unknown, object>(tracingChannels[name]), handlers }
})

let app: FastifyInstance | undefined
beforeEach(() => {
  seen = []
  for (const { channel, handlers } of subscriptions) channel.subscribe(handlers)
})
afterEach(async () => {
  await app?.close()
  app = undefined
  for (const { channel, handlers } of subscriptions) channel.unsubscribe(handlers)
  // Whatever each test traced carries no secret of its own user's, nor a bound value.
  const { user } = fixture
  const text = [...new Set(seen.map((entry) => entry.context))].map((context) => inspect(context, { depth: 10, showHidden: true, getters: true })).join('\n')
  for (const secret of [user.password, encodeURIComponent(user.password), user.url, SECRET]) expect(text).not.toContain(secret)
})

/** The phases `name` published, in order, for the contexts that `matches`. */
function phasesOf (name: Name, matches: (context: Record<string, unknown>) => boolean = () => true): Phase[] {
  return seen.filter((entry) => entry.name === name && matches(entry.context)).map((entry) => entry.phase)
}

/** The distinct contexts `name` published, in order of their start. */
function contextsOf (name: Name): Array<Record<string, unknown>> {
  return [...new Set(seen.filter((entry) => entry.name === name).map((entry) => entry.context))]
}

/** Resolves once `name` has published `phase` for a context that `matches`. */
async function published (name: Name, phase: Phase, matches: (context: Record<string, unknown>) => boolean = () => true): Promise<Record<string, unknown>> {
  const found = seen.find((entry) => entry.name === name && entry.phase === phase && matches(entry.context))
  if (found !== undefined) return found.context
  const channel = tracingChannel<unknown, object>(tracingChannels[name])[phase]
  return new Promise((resolve) => {
    const listener = (message: unknown) => {
      if (!matches(message as Record<string, unknown>)) return
      channel.unsubscribe(listener)
      resolve(message as Record<string, unknown>)
    }
    channel.subscribe(listener)
  })
}

function build (options: Record<string, unknown> = {}): FastifyInstance {
  app = buildApp().app
  app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 1 }, ...options })
  return app
}

async function vault (): Promise<void> {
  await fixture.database.admin.query(`CREATE TABLE \`${fixture.user.user}\`.vault (id INT AUTO_INCREMENT PRIMARY KEY, token VARCHAR(100) NOT NULL UNIQUE)`)
  await fixture.database.admin.query(`INSERT INTO \`${fixture.user.user}\`.vault (token) VALUES (?)`, [SECRET])
}

/** A loopback port nothing listens on. */
async function closedPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

test('exports the tracing channel names, frozen, under the package name', () => {
  expect(Object.isFrozen(tracingChannels)).toBe(true)
  expect(tracingChannels).toEqual({
    acquire: 'fastify-fork-safe-db:acquire',
    query: 'fastify-fork-safe-db:query',
    transaction: 'fastify-fork-safe-db:transaction',
    cancel: 'fastify-fork-safe-db:cancel',
    connect: 'fastify-fork-safe-db:connect'
  })
})

test('traces a request.db statement with the request id, the route and the statement with placeholders', async () => {
  const app = build()
  app.get('/users/:id', async (req) => ({ id: req.id, rows: await req.db.raw('SELECT ? AS v', [SECRET]) }))
  await app.listen({ port: 0, host: '127.0.0.1' })
  seen = []
  const response = await request(app, '/users/7')
  expect(response.status).toBe(200)
  const { id } = JSON.parse(response.body) as { id: string }

  expect(phasesOf('query')).toEqual(['start', 'end', 'asyncStart', 'asyncEnd'])
  const [query] = contextsOf('query')
  expect(query).toEqual({
    pool: { decorator: 'db', pid: process.pid },
    queryId: expect.any(Number),
    connectionId: expect.any(Number),
    host: `${fixture.user.connection.host}:${fixture.user.connection.port}`,
    sql: 'SELECT ? AS v',
    method: 'raw',
    inTransaction: false,
    requestId: id,
    route: 'GET /users/:id',
    durationMillis: expect.any(Number)
  })
  // Its borrow, traced around the statement's: the same connection.
  expect(phasesOf('acquire')).toEqual(['start', 'end', 'asyncStart', 'asyncEnd'])
  expect(contextsOf('acquire')[0]).toMatchObject({ internal: false, connectionId: query.connectionId, host: query.host, waitMillis: expect.any(Number) })
})

test('publishes a failing statement\'s error as the caller gets it: coded and sanitized, with its code', async () => {
  await vault()
  const app = build()
  await app.ready()
  seen = []
  const caught = await app.db('vault').insert({ token: SECRET }).then(() => undefined, (error: unknown) => error)
  expect(caught).toMatchObject({ code: 'ER_DUP_ENTRY' })

  expect(phasesOf('query')).toEqual(['start', 'end', 'error', 'asyncStart', 'asyncEnd'])
  const [query] = contextsOf('query')
  expect(query.error).toBe(caught)
  expect(query).toMatchObject({ errorCode: 'ER_DUP_ENTRY', sql: 'insert into `vault` (`token`) values (?)', method: 'insert', requestId: undefined, route: undefined })
})

test('traces a transaction that commits, from BEGIN to COMMIT, with its statements inside it', async () => {
  const app = build()
  app.get('/commit', async (req) => {
    await req.db.transaction(async (trx) => trx.raw('SELECT ? AS v', [SECRET]))
    return { id: req.id }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  seen = []
  const response = await request(app, '/commit')
  expect(response.status).toBe(200)

  expect(phasesOf('transaction')).toEqual(['start', 'end', 'asyncStart', 'asyncEnd'])
  const [transaction] = contextsOf('transaction')
  expect(transaction).toEqual({
    pool: { decorator: 'db', pid: process.pid },
    transactionId: expect.any(Number),
    nested: false,
    attempt: 1,
    connectionId: expect.any(Number),
    outcome: 'committed',
    requestId: (JSON.parse(response.body) as { id: string }).id,
    route: 'GET /commit',
    durationMillis: expect.any(Number)
  })
  // The statement ran between the transaction's start and its asyncStart, on its connection.
  const order = seen.filter((entry) => entry.phase === 'start' || entry.phase === 'asyncStart').map((entry) => `${entry.name}:${entry.phase}`)
  expect(order.indexOf('transaction:start')).toBeLessThan(order.indexOf('query:start'))
  expect(order.indexOf('query:asyncStart')).toBeLessThan(order.indexOf('transaction:asyncStart'))
  expect(contextsOf('query')[0]).toMatchObject({ inTransaction: true, connectionId: transaction.connectionId })
})

test('traces a transaction that rolls back with the error its caller gets, and a savepoint inside one', async () => {
  const app = build()
  await app.ready()
  seen = []
  const failure = new Error('the handler gave up')
  const caught = await app.db.transaction(async (trx) => {
    await trx.transaction(async (savepoint) => savepoint.raw('SELECT 1'))
    throw failure
  }).then(() => undefined, (error: unknown) => error)
  expect(caught).toBe(failure)

  const [outer, inner] = contextsOf('transaction')
  expect(inner).toMatchObject({ nested: true, outcome: 'committed', connectionId: outer.connectionId })
  expect(phasesOf('transaction', (context) => context === inner)).toEqual(['start', 'end', 'asyncStart', 'asyncEnd'])
  expect(phasesOf('transaction', (context) => context === outer)).toEqual(['start', 'end', 'error', 'asyncStart', 'asyncEnd'])
  expect(outer).toMatchObject({ nested: false, outcome: 'rolled back' })
  expect(outer).not.toHaveProperty('errorCode')
  expect(outer.requestId).toBeUndefined()
  expect(outer.error).toBe(caught)
})

test('traces the KILL QUERY of a statement past queryTimeoutMillis until the server answered it', async () => {
  const app = build({ queryTimeoutMillis: 200 })
  app.get('/slow', async (req) => req.db.raw('SELECT SLEEP(5) AS slow, ? AS v', [SECRET]))
  await app.listen({ port: 0, host: '127.0.0.1' })
  seen = []
  const response = await request(app, '/slow')
  expect(JSON.parse(response.body)).toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT' })

  const [query] = contextsOf('query')
  expect(query).toMatchObject({ errorCode: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT', route: 'GET /slow' })
  const cancel = await published('cancel', 'asyncEnd')
  expect(cancel).toEqual({
    pool: { decorator: 'db', pid: process.pid },
    connectionId: query.connectionId,
    host: query.host,
    reason: 'its query timed out',
    durationMillis: expect.any(Number)
  })
  // No error: the server answered the KILL.
  expect(phasesOf('cancel')).toEqual(['start', 'end', 'asyncStart', 'asyncEnd'])
})

test('traces a borrow that waited for the only connection, and one that timed out, with its coded error', async () => {
  const app = build({ pool: { min: 1, max: 1, acquireTimeoutMillis: 300 } })
  await app.ready()
  seen = []
  const trx = await app.db.transaction()
  const waiting = app.db.raw('SELECT 1 AS one').then((result) => result)
  await published('acquire', 'start', (context) => context !== contextsOf('acquire')[0])
  const [held, waiter] = contextsOf('acquire')
  expect(phasesOf('acquire', (context) => context === waiter)).toEqual(['start', 'end'])
  await trx.commit()
  expect(await waiting).toEqual([[{ one: 1 }], expect.anything()])
  expect(phasesOf('acquire', (context) => context === waiter)).toEqual(['start', 'end', 'asyncStart', 'asyncEnd'])
  expect(waiter).toMatchObject({ internal: false, connectionId: held.connectionId, waitMillis: expect.any(Number) })

  const holding = await app.db.transaction()
  const caught = await app.db.raw('SELECT 1').then(() => undefined, (error: unknown) => error)
  await holding.commit()
  expect(caught).toMatchObject({ code: 'FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT' })
  const timedOut = contextsOf('acquire').find((context) => context.error !== undefined)
  expect(timedOut).toMatchObject({ errorCode: 'FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT', waitMillis: expect.any(Number) })
  expect(timedOut?.connectionId).toBeUndefined()
  expect(timedOut?.error).toBe(caught)
  expect(phasesOf('acquire', (context) => context === timedOut)).toEqual(['start', 'end', 'error', 'asyncStart', 'asyncEnd'])
})

test('traces each connect attempt through its host\'s breaker: the warm-up\'s, and a refused one with its coded error', async () => {
  const app = build()
  await app.ready()
  expect(phasesOf('connect')).toEqual(['start', 'end', 'asyncStart', 'asyncEnd'])
  const [connect] = contextsOf('connect')
  const [[thread]] = await app.db.raw('SELECT CONNECTION_ID() AS id') as unknown as [[{ id: number }]]
  expect(connect).toEqual({
    pool: { decorator: 'db', pid: process.pid },
    host: `${fixture.user.connection.host}:${fixture.user.connection.port}`,
    breaker: 'closed',
    connectionId: thread.id,
    connectMillis: expect.any(Number)
  })

  const port = await closedPort()
  const refusedApp = buildApp().app
  try {
    await refusedApp.register(forkSafeDb, { connection: fixture.user.url.replace(`:${fixture.user.connection.port}/`, `:${port}/`), allowColdStart: true, pool: { min: 1, max: 1 } })
    await refusedApp.ready()
    const refused = await published('connect', 'asyncEnd', (context) => context.host === `${fixture.user.connection.host}:${port}`)
    expect(refused).toMatchObject({ breaker: 'closed', errorCode: 'FST_FORK_SAFE_DB_CONNECT_REFUSED', connectMillis: expect.any(Number) })
    expect(refused.connectionId).toBeUndefined()
    expect(phasesOf('connect', (context) => context === refused)).toEqual(['start', 'end', 'error', 'asyncStart', 'asyncEnd'])
  } finally {
    await refusedApp.close()
  }
})

test('a caller\'s async context reaches the driver through a traced statement, and a store bound to start holds there', async () => {
  // What OpenTelemetry's context manager relies on: the driver runs in the caller's context, or
  // in a store a tracer binds to the plugin's start channel.
  const app = build()
  await app.ready()
  const caller = new AsyncLocalStorage<string>()
  const bound = new AsyncLocalStorage<string>()
  const start = tracingChannel<unknown, QueryTraceContext>(tracingChannels.query).start
  start.bindStore(bound, (context) => `query ${context.queryId}`)
  const inDriver: Array<[string | undefined, string | undefined]> = []
  const driverStart = tracingChannel('mysql2:query').start
  const listener = () => { inDriver.push([caller.getStore(), bound.getStore()]) }
  driverStart.subscribe(listener)
  try {
    await caller.run('request 1', async () => app.db.raw('SELECT 1'))
  } finally {
    driverStart.unsubscribe(listener)
    start.unbindStore(bound)
  }
  const [query] = contextsOf('query')
  expect(inDriver).toEqual([['request 1', `query ${String(query.queryId)}`]])
})

test('no context, nor the error in it, carries the password, the connection URL or a bound value', async () => {
  await vault()
  const { user } = fixture
  const app = build({ pool: { min: 1, max: 1, acquireTimeoutMillis: 300 }, maxPendingAcquires: 1, queryTimeoutMillis: 200 })
  app.post('/duplicate', async (req) => req.db('vault').insert({ token: SECRET }))
  app.get('/syntax', async (req) => req.db.raw('SELEC ? FROM vault', [SECRET]))
  app.get('/slow', async (req) => req.db.raw('SELECT SLEEP(2), ? AS token', [SECRET]))
  app.get('/transaction', async (req) => req.db.transaction(async (trx) => trx('vault').insert({ token: SECRET })))
  app.get('/hold', async (req) => {
    await req.db.raw('SELECT SLEEP(0.5), ? AS token', [SECRET]).timeout(2000, { cancel: true })
    return 'held'
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const statuses = [
    (await request(app, '/duplicate', { method: 'POST' })).status,
    (await request(app, '/syntax')).status,
    (await request(app, '/slow')).status,
    (await request(app, '/transaction')).status,
    // One holds the only connection, one waits (and times out), one finds the queue full.
    ...(await Promise.all([request(app, '/hold'), request(app, '/hold'), request(app, '/hold')])).map((response) => response.status)
  ]
  expect(statuses).toEqual([500, 500, 503, 500, 200, 503, 503])
  await published('cancel', 'asyncEnd')

  const refused = buildApp().app
  try {
    await refused.register(forkSafeDb, { connection: user.url.replace(`:${user.connection.port}/`, `:${await closedPort()}/`), allowColdStart: true })
    await refused.ready()
    await published('connect', 'error')
  } finally {
    await refused.close()
  }

  // Every channel and the error phase of each but the transaction's was exercised.
  expect(new Set(seen.map((entry) => entry.name))).toEqual(new Set(Object.keys(tracingChannels)))
  expect(new Set(seen.filter((entry) => entry.phase === 'error').map((entry) => entry.name))).toEqual(new Set(['query', 'acquire', 'connect', 'transaction']))
  const text = [...new Set(seen.map((entry) => entry.context))]
    .map((context) => inspect(context, { depth: 10, showHidden: true, getters: true }))
    .join('\n')
  expect(text).toContain('ER_DUP_ENTRY')
  for (const secret of [user.password, encodeURIComponent(user.password), user.url, SECRET]) expect(text).not.toContain(secret)
})
