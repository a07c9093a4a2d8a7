import Fastify from 'fastify'
import type { Knex } from 'knex'
import { expect, test } from 'tstyche'
import forkSafeDb, { type ForkSafeDbManager, type HostStats, type RouteDbOptions } from 'fastify-fork-safe-db'

// The declarations for a second registration in docs/request-scope.md ("A primary and a
// replica"), as a user writes them: they must compile under strict, route option included, and
// `FastifyInstance['db']` must be knex's own `Knex`.
declare module 'fastify' {
  interface FastifyInstance { replica: FastifyInstance['db'], replicaPool: ForkSafeDbManager }
  interface FastifyRequest { replica: FastifyInstance['db'] }
}
declare module 'fastify-fork-safe-db' {
  interface ForkSafeDbRouteOptions { replica?: RouteDbOptions }
}

const app = Fastify()

test('a second registration is typed through the documented declarations', () => {
  expect(app.register).type.toBeCallableWith(forkSafeDb, { connection: 'mysql://app:secret@127.0.0.1:3306/shop', decorator: 'replica' })
  expect(app.replica).type.toBe<Knex>()
  expect(app.replicaPool.stats).type.toBe<ForkSafeDbManager['stats']>()
})

test('its route option is accepted beside the default one, and checked', () => {
  app.get('/report', { replica: { transaction: true }, db: { transaction: false } }, async (request) => {
    expect(request.replica).type.toBe<Knex>()
    return request.replica('orders').count()
  })
  expect(app.get).type.not.toBeCallableWith('/bad', { replica: { transaction: 'yes' } }, async () => 'x')
})

test('the lag guard\'s options are typed, and stats() shows each host\'s lag', () => {
  expect(app.register).type.toBeCallableWith(forkSafeDb, {
    connection: 'mysql://app@127.0.0.1:3307/shop', decorator: 'replica', maxReplicaLagSeconds: 5, replicaLagCheckMillis: 500, replicaLagFallback: 'db'
  })
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection: 'mysql://app@127.0.0.1:3307/shop', maxReplicaLagSeconds: '5' })
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection: 'mysql://app@127.0.0.1:3307/shop', replicaLagFallback: true })
  expect(app.replicaPool.stats().hosts).type.toBe<HostStats[]>()
  expect<HostStats['lagSeconds']>().type.toBe<number | null | undefined>()
})
