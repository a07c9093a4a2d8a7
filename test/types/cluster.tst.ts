import pino from 'pino'
import Fastify from 'fastify'
import { expect, test } from 'tstyche'
import { requestRecycle, startCluster, type ClusterLogger, type ClusterOptions, type ForkSafeCluster } from '../../lib/cluster'

test('startCluster() returns the cluster, whose ready says whether all workers listened', () => {
  const cluster = startCluster({ workers: 2 })
  expect(cluster).type.toBe<ForkSafeCluster>()
  expect(cluster.ready).type.toBe<Promise<boolean>>()
  expect(cluster.closed).type.toBe<Promise<void>>()
  expect(cluster.roll()).type.toBe<Promise<void>>()
  expect(cluster.close('deploy')).type.toBe<Promise<void>>()
  expect(cluster.servingPids()).type.toBe<number[]>()
  expect(startCluster()).type.toBe<ForkSafeCluster>()
})

test('accepts the documented options and rejects wrong types', () => {
  expect(startCluster).type.toBeCallableWith({
    workers: 4,
    exec: 'dist/worker.js',
    env: { PORT: '3000' },
    startMillis: 60_000,
    stopMillis: 30_000,
    stopSignals: ['SIGINT', 'SIGTERM', 'SIGHUP'],
    rollSignals: ['SIGUSR2']
  } satisfies ClusterOptions)
  expect(startCluster).type.not.toBeCallableWith({ workers: '4' })
  expect(startCluster).type.not.toBeCallableWith({ env: { PORT: 3000 } })
  expect(startCluster).type.not.toBeCallableWith({ stopSignals: ['HUP'] })
})

test('takes a pino logger, or Fastify\'s', () => {
  expect(startCluster).type.toBeCallableWith({ logger: pino() })
  expect(startCluster).type.toBeCallableWith({ logger: Fastify().log })
  expect<ClusterLogger>().type.toBeAssignableFrom(pino())
})

test('requestRecycle() says whether it asked', () => {
  expect(requestRecycle()).type.toBe<boolean>()
})
