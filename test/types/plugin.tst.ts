import Fastify from 'fastify'
import type { Knex } from 'knex'
import { expect, test } from 'tstyche'
import forkSafeDb, { forkSafeDb as named, FST_FORK_SAFE_DB_INVALID_OPTION, type ForkSafeDbOptions } from '../../lib'

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
    allowUnsafe: { multipleStatements: true, localInfile: false, insecureTls: false }
  })
})

test('register rejects options of the wrong shape', () => {
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, {})
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection: 'mysql://app@host/db', pool: { max: '10' } })
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection: 'mysql://app@host/db', warmUp: true })
})

test('options and error constructors are exported types', () => {
  expect<ForkSafeDbOptions['warmup']>().type.toBe<boolean | number | undefined>()
  expect(new FST_FORK_SAFE_DB_INVALID_OPTION('x').code).type.toBe<'FST_FORK_SAFE_DB_INVALID_OPTION'>()
})
