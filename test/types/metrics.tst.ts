import { MeterProvider } from '@opentelemetry/sdk-metrics'
import Fastify from 'fastify'
import { expect, test } from 'tstyche'
import forkSafeDb, { type ForkSafeDbOptions, type MeterProviderLike, type MetricsOptions } from '../../lib'

const app = Fastify()
const connection = 'mysql://app:secret@127.0.0.1:3306/shop'
const meterProvider = new MeterProvider()

test('metrics takes true, an SDK MeterProvider, or { meterProvider, poolName }', () => {
  expect(app.register).type.toBeCallableWith(forkSafeDb, { connection, metrics: true })
  expect(app.register).type.toBeCallableWith(forkSafeDb, { connection, metrics: false })
  expect(app.register).type.toBeCallableWith(forkSafeDb, { connection, metrics: meterProvider })
  expect(app.register).type.toBeCallableWith(forkSafeDb, { connection, metrics: { meterProvider, poolName: 'orders' } })
  expect(app.register).type.toBeCallableWith(forkSafeDb, { connection, metrics: { poolName: 'orders' } })
  expect(meterProvider).type.toBeAssignableTo<MeterProviderLike>()
})

test('metrics rejects anything else', () => {
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection, metrics: 'yes' })
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection, metrics: { poolName: 1 } })
  expect(app.register).type.not.toBeCallableWith(forkSafeDb, { connection, metrics: { meterProvider: {} } })
  expect<ForkSafeDbOptions['metrics']>().type.toBe<boolean | MeterProviderLike | MetricsOptions | undefined>()
})
