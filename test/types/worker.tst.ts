import Fastify from 'fastify'
import { expect, test } from 'tstyche'
import forkSafeWorker, { forkSafeWorker as named, isWarmupRequest, type RetireReport } from '../../lib/worker'

const app = Fastify({ logger: true })

test('isWarmupRequest() fits a child logger factory, which Fastify 5.0.0 has too', () => {
  expect(app.setChildLoggerFactory).type.toBeCallableWith((logger: typeof app.log, bindings: object, options: object, raw: { socket?: object | null }) =>
    logger.child(bindings, isWarmupRequest(raw) ? { ...options, level: 'silent' } : options))
})

test('app.retire() resolves with a retire report, through declaration merging', () => {
  expect(app.retire('SIGTERM')).type.toBe<Promise<RetireReport>>()
  expect(app.retire()).type.toBe<Promise<RetireReport>>()
})

test('request.isWarmup is a boolean', () => {
  app.get('/', async (request) => {
    expect(request.isWarmup).type.toBe<boolean>()
    return {}
  })
})

test('the default and named exports are the same plugin type', () => {
  expect(named).type.toBe(forkSafeWorker)
})

test('register accepts the documented options and rejects wrong types', () => {
  expect(app.register).type.toBeCallableWith(forkSafeWorker, {
    drainMillis: 5000,
    closeMillis: 10_000,
    disconnectMillis: 5000,
    signals: ['SIGTERM'],
    ignoreSignals: ['SIGHUP'],
    warmup: { requests: [{ url: '/users/1' }, { method: 'POST', url: '/users', body: { name: 'x' }, headers: { 'x-a': 'b' } }], rounds: 20, concurrency: 2, maxMillis: 3000 }
  })
  expect(app.register).type.not.toBeCallableWith(forkSafeWorker, { drainMillis: 'soon' })
  expect(app.register).type.not.toBeCallableWith(forkSafeWorker, { warmup: { requests: [{ method: 'FETCH', url: '/' }] } })
})
