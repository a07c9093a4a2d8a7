import Fastify from 'fastify'
import type { Knex } from 'knex'
import { expect, test } from 'tstyche'
import forkSafeDb, {
  computeBudget, forkSafeDb as named, FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, FST_FORK_SAFE_DB_BUDGET_EXCEEDED, FST_FORK_SAFE_DB_INVALID_OPTION,
  FST_FORK_SAFE_DB_QUERY_TIMEOUT, type ConnectionBudget, type ForkSafeDbManager, type ForkSafeDbOptions, type ForkSafeDbStats
} from '../../lib'

const app = Fastify()

test('fastify.db and request.db are knex instances through declaration merging', () => {
  expect(app.db).type.toBe<Knex>()
  app.get('/', async (request) => {
    expect(request.db).type.toBe<Knex>()
    return request.db('users').first()
  })
})

test('the default and named exports are the same plugin type', () => {
  expect(named).type.toBe(forkSafeDb)
})

test('register accepts a URL or a mysql2 connection object with pool options', () => {
  expect(app.register).type.toBeCallableWith(forkSafeDb, { connection: 'mysql://app:secret@127.0.0.1:3306/shop' })
  expect(app.register).type.toBeCallableWith(forkSafeDb, {
    connection: { host: '127.0.0.1', user: 'app', password: 'secret', database: 'shop' },
    pool: { min: 2, max: 10, acquireTimeoutMillis: 5000 },
    warmup: true,
    allowColdStart: false,
    decorator: 'replica',
    checkAfterIdleMillis: 500,
    pingAfterIdleMillis: 30_000,
    queryTimeoutMillis: 30_000,
    maxPendingAcquires: 40,
    closeTimeoutMillis: 10_000,
    allowUnsafe: { multipleStatements: true, localInfile: false, insecureTls: false },
    budget: { workers: 16, total: 'server', reserve: 10, onExceed: 'fail' },
    warmupConcurrency: 2,
    warmupJitterMillis: 500
  })
})

test('fastify.dbPool reports typed stats and a boolean health check', () => {
  expect(app.dbPool).type.toBe<ForkSafeDbManager>()
  expect(app.dbPool.stats()).type.toBe<ForkSafeDbStats>()
  expect(app.dbPool.stats().connections.used).type.toBe<number>()
  expect(app.dbPool.stats().budget).type.toBe<ConnectionBudget | undefined>()
  expect(app.dbPool.check()).type.toBe<Promise<boolean>>()
})

test('routes accept { db: { transaction: true } } and nothing else under db', () => {
  expect(app.get).type.toBeCallableWith('/', { db: { transaction: true } }, async () => 'ok')
  expect(app.get).type.not.toBeCallableWith('/', { db: { transaction: 'yes' } }, async () => 'ok')
})

test('the budget arithmetic and its error are exported', () => {
  expect(computeBudget({ workers: 16, total: 151, reserve: 10, poolMax: 10, poolMin: 2, explicitMax: false, explicitMin: false }).perProcess).type.toBe<number>()
  expect(new FST_FORK_SAFE_DB_BUDGET_EXCEEDED('db', 'x').code).type.toBe<'FST_FORK_SAFE_DB_BUDGET_EXCEEDED'>()
})

test('register rejects options of the wrong shape', () => {
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, {})
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection: 'mysql://app@host/db', pool: { max: '10' } })
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection: 'mysql://app@host/db', warmUp: true })
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection: 'mysql://app@host/db', budget: { total: 'auto' } })
})

test('options and error constructors are exported types', () => {
  expect<ForkSafeDbOptions['warmup']>().type.toBe<boolean | number | undefined>()
  expect(new FST_FORK_SAFE_DB_INVALID_OPTION('x').code).type.toBe<'FST_FORK_SAFE_DB_INVALID_OPTION'>()
})

test('register takes an existing knex configuration: knex\'s own options under knex\'s names', () => {
  expect(app.register).type.toBeCallableWith(forkSafeDb, {
    client: 'mysql2',
    connection: { host: '127.0.0.1', user: 'app', password: 'secret', database: 'shop' },
    pool: {
      min: 2,
      max: 10,
      afterCreate: (connection: unknown, done: (error: Error | null, connection?: unknown) => void) => done(null, connection),
      validate: () => true,
      log: (message: string) => message
    },
    postProcessResponse: (result: unknown) => result,
    wrapIdentifier: (value: string, origImpl: (value: string) => string) => origImpl(value),
    useNullAsDefault: true,
    asyncStackTraces: true,
    debug: false,
    migrations: { directory: './migrations', tableName: 'knex_migrations' },
    seeds: { directory: './seeds' },
    acquireConnectionTimeout: 10_000,
    log: { warn: (message: string) => message }
  })
})

test('connection can be knex\'s connection function, sync or async, with an expirationChecker', () => {
  expect(app.register).type.toBeCallableWith(forkSafeDb, { connection: () => 'mysql://app@127.0.0.1/shop' })
  expect(app.register).type.toBeCallableWith(forkSafeDb, {
    connection: async () => ({ host: '127.0.0.1', user: 'app', password: 'token', expirationChecker: () => false })
  })
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection: async () => 42 })
})

test('register refuses another client and compileSqlOnError: true', () => {
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { client: 'pg', connection: 'mysql://app@host/db' })
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection: 'mysql://app@host/db', compileSqlOnError: true })
})

test('the timeout errors are exported with their codes (at run time they are knex\'s KnexTimeoutError too)', () => {
  expect(new FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT('db', 5000).code).type.toBe<'FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT'>()
  expect(new FST_FORK_SAFE_DB_QUERY_TIMEOUT('x').code).type.toBe<'FST_FORK_SAFE_DB_QUERY_TIMEOUT'>()
})
