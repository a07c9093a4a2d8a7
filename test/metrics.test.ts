import { metrics } from '@opentelemetry/api'
import {
  AggregationTemporality, DataPointType, MeterProvider, MetricReader,
  type DataPoint, type Histogram, type MetricData, type SumMetricData
} from '@opentelemetry/sdk-metrics'
import type { FastifyInstance } from 'fastify'
import type { Knex } from 'knex'
import { channel } from 'node:diagnostics_channel'
import { performance } from 'node:perf_hooks'
import forkSafeDb, { channels, type ForkSafeDbOptions } from '../lib'
import { TcpProxy } from '../support/tcp-proxy'
import { buildApp, simulatePid, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// `metrics` through a real OpenTelemetry SDK (a pull reader, collected on demand) against the
// real server: the semantic conventions' names, units, instrument types and attributes, counts
// that match the server's process list, and nothing at all when the option is off.

const fixture = perTestUser()
const SCOPE = 'fastify-fork-safe-db'
const BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10]

/** Collects only when asked; exports nothing. */
class PullReader extends MetricReader {
  protected override async onForceFlush (): Promise<void> {}
  protected override async onShutdown (): Promise<void> {}
}

let logged: LoggedApp
let app: FastifyInstance
let reader: PullReader
let provider: MeterProvider
const cleanups: Array<() => Promise<void> | void> = []

function newProvider (temporality = AggregationTemporality.CUMULATIVE): void {
  reader = new PullReader({ aggregationTemporalitySelector: () => temporality })
  provider = new MeterProvider({ readers: [reader] })
}

function build (options: Partial<ForkSafeDbOptions> = {}): void {
  logged = buildApp()
  app = logged.app
  app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 2, max: 4 }, metrics: provider, ...options })
  app.get('/one', async (request) => request.db.raw('SELECT 1 AS one'))
  app.get('/users', async (request) => request.db('information_schema.SCHEMATA').select('SCHEMA_NAME').limit(1))
  app.get('/missing', async (request) => request.db('no_such_table').select('id'))
}

beforeEach(() => newProvider())
afterEach(async () => {
  await app?.close()
  for (const cleanup of cleanups.splice(0)) await cleanup()
  await provider.shutdown()
})

/** The plugin's metrics in one collection, by name. */
async function collect (): Promise<Map<string, MetricData>> {
  const { resourceMetrics } = await reader.collect()
  const found = new Map<string, MetricData>()
  for (const scope of resourceMetrics.scopeMetrics) {
    if (scope.scope.name !== SCOPE) continue
    for (const metric of scope.metrics) found.set(metric.descriptor.name, metric)
  }
  return found
}

function metric (collected: Map<string, MetricData>, name: string): MetricData {
  const found = collected.get(name)
  if (found === undefined) throw new Error(`${name} was not collected (collected: ${[...collected.keys()].join(', ')})`)
  return found
}

function point (data: MetricData, attributes: Record<string, unknown> = {}): DataPoint<number | Histogram> {
  const found = (data.dataPoints as Array<DataPoint<number | Histogram>>).filter((one) => Object.entries(attributes).every(([key, value]) => one.attributes[key] === value))
  if (found.length !== 1) throw new Error(`${data.descriptor.name}: ${found.length} points match ${JSON.stringify(attributes)}: ${JSON.stringify(data.dataPoints.map((one) => one.attributes))}`)
  return found[0]
}

const histogram = (data: MetricData, attributes: Record<string, unknown> = {}) => point(data, attributes).value as Histogram
const value = (data: MetricData, attributes: Record<string, unknown> = {}) => point(data, attributes).value as number

/** What every point of a registration with one host carries. */
function hostAttributes (poolName = 'db'): Record<string, unknown> {
  return {
    'db.client.connection.pool.name': poolName,
    'db.system.name': 'mariadb',
    'db.namespace': fixture.user.connection.database,
    'server.address': fixture.user.connection.host,
    'server.port': fixture.user.connection.port
  }
}

/** Holds the only connection of a pool of one in a transaction until `release()`. */
async function holdConnection (knex: Knex): Promise<{ release: () => Promise<void>, heldSince: number }> {
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  let began!: () => void
  const begun = new Promise<void>((resolve) => { began = resolve })
  const transaction = knex.transaction(async (trx) => {
    await trx.raw('SELECT 1')
    began()
    await released
  })
  await begun
  return { heldSince: performance.now(), release: async () => { release(); await transaction } }
}

/** Resolves once a borrow waits in the pool's queue (stats() reads tarn's queue). */
async function queued (count: number): Promise<void> {
  while (app.dbPool.stats().connections.pendingAcquires < count) await new Promise((resolve) => setImmediate(resolve))
}

test('the server is MariaDB (the attributes below expect `mariadb`)', async () => {
  const [rows] = await fixture.database.admin.query('SELECT VERSION() AS version') as unknown as [Array<{ version: string }>]
  expect(rows[0].version).toMatch(/MariaDB/)
})

test('emits every pool metric with its semantic-convention name, unit, instrument type and attributes', async () => {
  build()
  await app.ready()
  await app.inject('/one')
  const collected = await collect()
  const gauges: Array<[string, string]> = [
    ['db.client.connection.count', '{connection}'],
    ['db.client.connection.idle.max', '{connection}'],
    ['db.client.connection.idle.min', '{connection}'],
    ['db.client.connection.max', '{connection}'],
    ['db.client.connection.pending_requests', '{request}']
  ]
  for (const [name, unit] of gauges) {
    const data = metric(collected, name)
    expect(data.descriptor.unit).toBe(unit)
    // An UpDownCounter: a sum that is not monotonic.
    expect(data.dataPointType).toBe(DataPointType.SUM)
    expect((data as SumMetricData).isMonotonic).toBe(false)
    for (const one of data.dataPoints) expect(one.attributes).toMatchObject(hostAttributes())
  }
  for (const name of ['db.client.operation.duration', 'db.client.connection.create_time', 'db.client.connection.wait_time', 'db.client.connection.use_time']) {
    const data = metric(collected, name)
    expect(data.descriptor.unit).toBe('s')
    expect(data.dataPointType).toBe(DataPointType.HISTOGRAM)
    expect(histogram(data).buckets.boundaries).toEqual(BUCKETS)
    for (const one of data.dataPoints) expect(one.attributes).toMatchObject(hostAttributes())
  }
  expect(value(metric(collected, 'db.client.connection.max'))).toBe(4)
  expect(value(metric(collected, 'db.client.connection.idle.max'))).toBe(4)
  expect(value(metric(collected, 'db.client.connection.idle.min'))).toBe(2)
  expect(value(metric(collected, 'db.client.connection.pending_requests'))).toBe(0)
})

test('counts connections by state as the server\'s process list does', async () => {
  build({ pool: { min: 3, max: 5 } })
  await app.ready()
  const held = await holdConnection(app.db)
  try {
    const count = metric(await collect(), 'db.client.connection.count')
    const idle = value(count, { 'db.client.connection.state': 'idle' })
    const used = value(count, { 'db.client.connection.state': 'used' })
    expect(used).toBe(1)
    expect(idle).toBe(2)
    expect(idle + used).toBe(await fixture.database.countConnections(fixture.user.user))
  } finally {
    await held.release()
  }
  const count = metric(await collect(), 'db.client.connection.count')
  expect(value(count, { 'db.client.connection.state': 'used' })).toBe(0)
  expect(value(count, { 'db.client.connection.state': 'idle' })).toBe(await fixture.database.countConnections(fixture.user.user))
})

test('records a longer wait_time, and a pending request, while the pool is saturated', async () => {
  build({ pool: { min: 1, max: 1 } })
  await app.ready()
  await app.inject('/one')
  const before = histogram(metric(await collect(), 'db.client.connection.wait_time'))
  expect(before.count).toBe(1)
  const held = await holdConnection(app.db)
  const waiting = app.inject('/one')
  await queued(1)
  const queuedBy = performance.now()
  expect(value(metric(await collect(), 'db.client.connection.pending_requests'))).toBe(1)
  // The borrow was queued before `queuedBy` and is served after the release.
  const waitedAtLeast = (performance.now() - queuedBy) / 1000
  await held.release()
  expect((await waiting).statusCode).toBe(200)
  const after = histogram(metric(await collect(), 'db.client.connection.wait_time'))
  // The query's own borrow, the transaction's, and the one that waited for it.
  expect(after.count).toBe(3)
  expect(after.max).toBeGreaterThan(before.max ?? 0)
  expect(after.max).toBeGreaterThanOrEqual(waitedAtLeast)
  expect(value(metric(await collect(), 'db.client.connection.pending_requests'))).toBe(0)
})

test('counts acquire timeouts in db.client.connection.timeouts', async () => {
  build({ pool: { min: 1, max: 1, acquireTimeoutMillis: 100 } })
  await app.ready()
  const held = await holdConnection(app.db)
  try {
    const responses = [await app.inject('/one'), await app.inject('/one')]
    expect(responses.map((response) => response.json().code)).toEqual(['FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT', 'FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT'])
  } finally {
    await held.release()
  }
  const timeouts = metric(await collect(), 'db.client.connection.timeouts')
  expect(timeouts.descriptor.unit).toBe('{timeout}')
  expect(timeouts.dataPointType).toBe(DataPointType.SUM)
  expect((timeouts as SumMetricData).isMonotonic).toBe(true)
  expect(value(timeouts, hostAttributes())).toBe(2)
})

test('records one create_time per connection opened', async () => {
  build({ pool: { min: 3, max: 5 } })
  await app.ready()
  expect(histogram(metric(await collect(), 'db.client.connection.create_time')).count).toBe(3)
  await app.dbPool.refresh()
  expect(app.dbPool.stats().connections.created).toBe(6)
  expect(histogram(metric(await collect(), 'db.client.connection.create_time')).count).toBe(6)
})

test('records how long the application held a connection in use_time (not warm-up\'s borrows)', async () => {
  build({ pool: { min: 2, max: 2 } })
  await app.ready()
  expect((await collect()).get('db.client.connection.use_time')?.dataPoints ?? []).toHaveLength(0)
  const held = await holdConnection(app.db)
  await new Promise((resolve) => setImmediate(resolve))
  const heldAtLeast = (performance.now() - held.heldSince) / 1000
  await held.release()
  const useTime = histogram(metric(await collect(), 'db.client.connection.use_time'))
  expect(useTime.count).toBe(1)
  expect(useTime.max).toBeGreaterThanOrEqual(heldAtLeast)
})

test('records statements\' durations by SQL verb, with error.type and the server\'s error number when one failed', async () => {
  build()
  await app.ready()
  await app.inject('/one')
  await app.inject('/users')
  expect((await app.inject('/missing')).statusCode).toBe(500)
  const duration = metric(await collect(), 'db.client.operation.duration')
  const selects = histogram(duration, { ...hostAttributes(), 'db.operation.name': 'SELECT', 'error.type': undefined })
  expect(selects.count).toBe(2)
  const failed = point(duration, { 'error.type': 'ER_NO_SUCH_TABLE' })
  expect(failed.attributes).toEqual({ ...hostAttributes(), 'db.operation.name': 'SELECT', 'error.type': 'ER_NO_SUCH_TABLE', 'db.response.status_code': '1146' })
  expect((failed.value as Histogram).count).toBe(1)
})

test('counts a failed statement whose error has no code as failed, with error.type _OTHER', async () => {
  // A postProcessResponse that throws fails the statement with an Error that has no code.
  build({ postProcessResponse: (result: unknown) => { if (JSON.stringify(result).includes('"boom":1')) throw new Error('no code here'); return result } })
  await app.ready()
  expect((await app.inject('/one')).statusCode).toBe(200)
  await expect(app.db.raw('SELECT 1 AS boom')).rejects.toThrow('no code here')
  const duration = metric(await collect(), 'db.client.operation.duration')
  const failed = point(duration, { 'error.type': '_OTHER' })
  expect(failed.attributes).toEqual({ ...hostAttributes(), 'db.operation.name': 'SELECT', 'error.type': '_OTHER' })
  expect((failed.value as Histogram).count).toBe(1)
  expect(histogram(duration, { 'error.type': undefined }).count).toBe(1)
})

test('reads no operation name from a raw statement\'s text when the registration allows multiple statements', async () => {
  build({ allowUnsafe: { multipleStatements: true } })
  await app.ready()
  await app.db.raw('SELECT 1 AS one')
  await app.db('information_schema.SCHEMATA').select('SCHEMA_NAME').limit(1)
  const duration = metric(await collect(), 'db.client.operation.duration')
  // The builder's method still names its verb; the raw text's first word does not.
  expect(histogram(duration, { 'db.operation.name': 'SELECT' }).count).toBe(1)
  expect(histogram(duration, { 'db.operation.name': undefined }).count).toBe(1)
})

test('with warmup off, a pool collected before its first connection emits one point per pool metric once it has one, all with db.system.name', async () => {
  build({ warmup: false })
  await app.ready()
  expect(typeof app.db).toBe('function')
  // Nothing is known of the server yet: collected now, nothing may be pinned under partial attributes.
  await collect()
  await app.db.raw('SELECT 1 AS one')
  const collected = await collect()
  expect(metric(collected, 'db.client.connection.max').dataPoints).toHaveLength(1)
  for (const name of ['db.client.connection.idle.max', 'db.client.connection.idle.min', 'db.client.connection.pending_requests']) {
    expect(metric(collected, name).dataPoints).toHaveLength(1)
  }
  // One host: idle and used, each once.
  expect(metric(collected, 'db.client.connection.count').dataPoints).toHaveLength(2)
  for (const data of collected.values()) {
    for (const one of data.dataPoints) expect(one.attributes).toMatchObject({ 'db.system.name': 'mariadb' })
  }
})

test('names the pool by metrics.poolName', async () => {
  build({ metrics: { meterProvider: provider, poolName: 'orders' } })
  await app.ready()
  const count = metric(await collect(), 'db.client.connection.count')
  expect(count.dataPoints.map((one) => one.attributes['db.client.connection.pool.name'])).toEqual(['orders', 'orders'])
})

test('emits nothing when the option is off, even with a global SDK', async () => {
  metrics.setGlobalMeterProvider(provider)
  cleanups.push(() => metrics.disable())
  build({ metrics: undefined })
  await app.ready()
  await app.inject('/one')
  const { resourceMetrics } = await reader.collect()
  expect(resourceMetrics.scopeMetrics.map((scope) => scope.scope.name)).not.toContain(SCOPE)
})

test('metrics: true uses the global meter provider registered before ready()', async () => {
  metrics.setGlobalMeterProvider(provider)
  cleanups.push(() => metrics.disable())
  build({ metrics: true })
  await app.ready()
  await app.inject('/one')
  expect(histogram(metric(await collect(), 'db.client.operation.duration')).count).toBe(1)
})

test('metrics: true with no SDK registered meters nothing, and says so at debug level', async () => {
  build({ metrics: true })
  await app.ready()
  await app.inject('/one')
  expect((await collect()).size).toBe(0)
  expect(logged.lines().some((line) => line.level === 20 && String(line.msg).startsWith('metrics: the meter provider is OpenTelemetry\'s no-op one'))).toBe(true)
})

test('a closed app reports nothing more (delta temporality: nothing recorded, no callback left)', async () => {
  newProvider(AggregationTemporality.DELTA)
  build()
  await app.ready()
  await app.inject('/one')
  expect((await collect()).size).toBeGreaterThan(0)
  await app.close()
  const collected = await collect()
  expect([...collected.values()].map((data) => [data.descriptor.name, data.dataPoints.length]).filter(([, points]) => points !== 0)).toEqual([])
})

test('records the duration of a statement that held up the app\'s close', async () => {
  build()
  await app.ready()
  const statement = app.db.raw('SELECT SLEEP(0.3) AS draining').then(() => 'done')
  // Sent once the pool lends it a connection: then the close has a statement to drain.
  while (app.dbPool.stats().connections.used === 0) await new Promise((resolve) => setImmediate(resolve))
  await app.close()
  expect(await statement).toBe('done')
  const duration = metric(await collect(), 'db.client.operation.duration')
  expect(histogram(duration, { 'db.operation.name': 'SELECT' }).count).toBe(1)
})

test('a pool rebuilt after a pid change is metered, and the inherited one no longer', async () => {
  build({ pool: { min: 2, max: 4 } })
  await app.ready()
  const inherited = app.db
  const restorePid = simulatePid(process.pid + 100_000)
  try {
    await app.db.raw('SELECT 1')
    expect(app.dbPool.stats().rebuilds).toBe(1)
    const count = metric(await collect(), 'db.client.connection.count')
    // The inherited pool's two connections are left to the parent: only the new pool's one is counted.
    expect(count.dataPoints.map((one) => one.value)).toEqual([1, 0])
    expect(histogram(metric(await collect(), 'db.client.operation.duration')).count).toBe(1)
    // Closed as the "child" (its own pool), then the abandoned parent pool by hand.
    await app.close()
  } finally {
    restorePid()
    await inherited.destroy()
  }
})

test('reports server.address and server.port per host with several hosts', async () => {
  const { host, port } = fixture.user.connection
  const proxy = await TcpProxy.start({ target: { host, port } })
  cleanups.push(() => proxy.close())
  const viaProxy = { ...fixture.user.connection, port: proxy.port }
  build({ connection: [fixture.user.connection, viaProxy], hostPolicy: 'random', pool: { min: 6, max: 6 } })
  await app.ready()
  const count = metric(await collect(), 'db.client.connection.count')
  const ports = new Set(count.dataPoints.map((one) => one.attributes['server.port']))
  expect(ports).toEqual(new Set([port, proxy.port]))
  const stats = app.dbPool.stats().hosts
  for (const row of stats) {
    const rowPort = Number(row.host.split(':').pop())
    expect(value(count, { 'server.port': rowPort, 'db.client.connection.state': 'idle' })).toBe(row.connections - row.inUse)
  }
  const total = count.dataPoints.reduce((sum, one) => sum + (one.value as number), 0)
  expect(total).toBe(await fixture.database.countConnections(fixture.user.user))
  // What belongs to the pool, not one host, carries no server address.
  expect(point(metric(await collect(), 'db.client.connection.max')).attributes).toEqual({
    'db.client.connection.pool.name': 'db', 'db.system.name': 'mariadb', 'db.namespace': fixture.user.connection.database
  })
})

test('a meter provider that throws fails the build and leaves no slow-query subscriber behind', async () => {
  const queryEnd = channel(channels.queryEnd)
  expect(queryEnd.hasSubscribers).toBe(false)
  const throwing = { getMeter: () => { throw new Error('the user\'s getMeter failed') } }
  build({ metrics: throwing as unknown as ForkSafeDbOptions['metrics'], slowQueryMillis: 100 })
  await expect(app.ready()).rejects.toThrow('the user\'s getMeter failed')
  expect(queryEnd.hasSubscribers).toBe(false)
})

test('a bad metrics value fails registration with FST_FORK_SAFE_DB_INVALID_OPTION', async () => {
  build({ metrics: 'yes' as unknown as boolean })
  await expect(app.ready()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_INVALID_OPTION', message: expect.stringMatching(/metrics must be true, false, a meter provider/) })
})

test('fails registration naming @opentelemetry/api when it cannot be loaded', async () => {
  let plugin: typeof forkSafeDb | undefined
  jest.isolateModules(() => {
    jest.doMock('@opentelemetry/api', () => { throw new Error('Cannot find module \'@opentelemetry/api\'') })
    plugin = require('../lib').default
  })
  cleanups.push(() => { jest.dontMock('@opentelemetry/api') })
  logged = buildApp()
  app = logged.app
  app.register(plugin as typeof forkSafeDb, { connection: fixture.user.url, metrics: true })
  await expect(app.ready()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_INVALID_OPTION', message: expect.stringMatching(/metrics needs the package @opentelemetry\/api/) })
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(0)
})
