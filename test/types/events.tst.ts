import { subscribe } from 'node:diagnostics_channel'
import { expect, test } from 'tstyche'
import { channels, type PoolAcquireEvent, type QueryEndEvent, type TransactionEndEvent } from '../../lib'

test('the channel names are literal, read-only strings under the package name', () => {
  expect(channels.queryEnd).type.toBe<'fastify-fork-safe-db:query:end'>()
  expect(channels.poolAcquire).type.toBe<'fastify-fork-safe-db:pool:acquire'>()
  expect(channels).type.not.toBeAssignableTo<{ queryEnd: string, unknownChannel: string }>()
  // @ts-expect-error Cannot assign to 'queryEnd' because it is a read-only property
  channels.queryEnd = 'other'
})

test('the exported event types give each channel\'s fields, and no bound values', () => {
  subscribe(channels.queryEnd, (message) => {
    const event = message as QueryEndEvent
    expect(event.durationMillis).type.toBe<number>()
    expect(event.errorCode).type.toBe<string | undefined>()
    expect(event.pool.decorator).type.toBe<string>()
  })
  expect<PoolAcquireEvent['waitMillis']>().type.toBe<number>()
  expect<TransactionEndEvent['outcome']>().type.toBe<'committed' | 'rolled back'>()
  // Events carry no bound values.
  expect<QueryEndEvent>().type.not.toHaveProperty('bindings')
})
