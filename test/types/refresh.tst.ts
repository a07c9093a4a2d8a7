import Fastify from 'fastify'
import { expect, test } from 'tstyche'
import forkSafeDb, { type ForkSafeDbManager, type RefreshResult } from '../../lib'

const app = Fastify()
app.register(forkSafeDb, { connection: 'mysql://app@127.0.0.1/shop' })

test('fastify.dbPool.refresh() resolves with how many connections it retired', () => {
  expect(app.dbPool.refresh).type.toBe<ForkSafeDbManager['refresh']>()
  expect(app.dbPool.refresh()).type.toBe<Promise<RefreshResult>>()
  expect(app.dbPool.refresh().then((result) => result.retired)).type.toBe<Promise<number>>()
})

test('refresh() takes no argument', () => {
  expect(app.dbPool.refresh).type.not.toBeCallableWith({ idleOnly: true })
})
