import { tracingChannel } from 'node:diagnostics_channel'
import { expect, test } from 'tstyche'
import {
  tracingChannels, type AcquireTraceContext, type CancelTraceContext, type ConnectTraceContext, type QueryTraceContext,
  type TraceContext, type TransactionTraceContext
} from '../../lib'

test('the tracing channel names are literal, read-only strings under the package name', () => {
  expect(tracingChannels.query).type.toBe<'fastify-fork-safe-db:query'>()
  expect(tracingChannels.acquire).type.toBe<'fastify-fork-safe-db:acquire'>()
  expect(tracingChannels.transaction).type.toBe<'fastify-fork-safe-db:transaction'>()
  expect(tracingChannels.cancel).type.toBe<'fastify-fork-safe-db:cancel'>()
  expect(tracingChannels.connect).type.toBe<'fastify-fork-safe-db:connect'>()
  // @ts-expect-error Cannot assign to 'query' because it is a read-only property
  tracingChannels.query = 'other'
})

test('a subscriber typed with a context type reads its fields', () => {
  tracingChannel<unknown, QueryTraceContext>(tracingChannels.query).subscribe({
    start (context) {
      expect(context.sql).type.toBe<string>()
      expect(context.requestId).type.toBe<string | undefined>()
      expect(context.pool.pid).type.toBe<number>()
    },
    end () {},
    asyncStart (context) { expect(context.durationMillis).type.toBe<number | undefined>() },
    asyncEnd () {},
    error (context) {
      expect(context.error).type.toBe<unknown>()
      expect(context.errorCode).type.toBe<string | undefined>()
    }
  })
  expect<TransactionTraceContext['outcome']>().type.toBe<'committed' | 'rolled back' | undefined>()
  expect<ConnectTraceContext['breaker']>().type.toBe<'closed' | 'half-open'>()
  expect<CancelTraceContext['reason']>().type.toBe<string>()
  expect<AcquireTraceContext['waitMillis']>().type.toBe<number | undefined>()
  expect<AcquireTraceContext>().type.toBeAssignableTo<TraceContext>()
})

test('no context type has a field for bound values or results', () => {
  expect<QueryTraceContext>().type.not.toHaveProperty('bindings')
  expect<QueryTraceContext>().type.not.toHaveProperty('values')
  expect<QueryTraceContext>().type.not.toHaveProperty('result')
  expect<ConnectTraceContext>().type.not.toHaveProperty('password')
})
