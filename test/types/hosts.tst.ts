import Fastify from 'fastify'
import { expect, test } from 'tstyche'
import forkSafeDb, { type BreakerOpenEvent, type ForkSafeDbOptions, type HostPolicy, type HostRole, type HostState, type HostStats, type PoolAcquireEvent, type PoolConnectEvent, type QueryCancelEvent } from '../../lib'

const one = { host: '127.0.0.1', user: 'app' }

test('connection takes a list of URLs and mysql2 objects, and a URL with several hosts', () => {
  expect<ForkSafeDbOptions>().type.toBeAssignableFrom({ connection: ['mysql://app@h1/shop', one] })
  expect<ForkSafeDbOptions>().type.toBeAssignableFrom({ connection: 'mysql://app@h1:3306,h2:3307/shop' })
  expect<ForkSafeDbOptions>().type.not.toBeAssignableFrom({ connection: [() => one] })
  expect<ForkSafeDbOptions>().type.not.toBeAssignableFrom({ connection: [3306] })
})

test('hostPolicy and role take their words only', () => {
  expect<ForkSafeDbOptions>().type.toBeAssignableFrom({ connection: [one], hostPolicy: 'random' as const, role: 'primary' as const })
  expect<ForkSafeDbOptions>().type.not.toBeAssignableFrom({ connection: one, hostPolicy: 'round-robin' as const })
  expect<ForkSafeDbOptions>().type.not.toBeAssignableFrom({ connection: one, role: 'writer' as const })
  expect<NonNullable<ForkSafeDbOptions['hostPolicy']>>().type.toBe<HostPolicy>()
  expect<NonNullable<ForkSafeDbOptions['role']>>().type.toBe<HostRole>()
})

test('stats().hosts lists each host with its state and counts', () => {
  const app = Fastify()
  app.register(forkSafeDb, { connection: [one, { ...one, host: '127.0.0.2' }] })
  expect(app.dbPool.stats().hosts).type.toBe<HostStats[]>()
  expect<HostStats['state']>().type.toBe<HostState>()
  expect<HostStats>().type.toBe<{ host: string, state: HostState, connections: number, failures: number, inUse: number, lagSeconds?: number | null }>()
})

test('the events carry the host', () => {
  expect<PoolConnectEvent['host']>().type.toBe<string>()
  expect<PoolAcquireEvent['host']>().type.toBe<string | undefined>()
  expect<QueryCancelEvent['host']>().type.toBe<string>()
  expect<BreakerOpenEvent['host']>().type.toBe<string>()
})
