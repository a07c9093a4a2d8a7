import { tracingChannel, type TracingChannel } from 'node:diagnostics_channel'
import { performance } from 'node:perf_hooks'
import { codeOf, type PoolIdentity, type QueryStartEvent } from './channels'

// The plugin's own TracingChannels, beside its plain channels (channels.ts): each traces one unit
// of work (a borrow, a statement, a transaction, a KILL, a connect attempt) as Node's
// `tracing:<name>:start|end|asyncStart|asyncEnd|error`, so a tracer makes a span of it and a
// store bound to `start` (`bindStore`) holds for whatever the unit runs. mysql2 publishes its
// own (`mysql2:query`, …) with the raw bound values in their contexts; these carry only what
// channels.ts's events carry: the statement with placeholders, the pool's identity, request id
// and route, thread id, host label, timings and error codes. Nothing is published (and nothing
// built) while a channel has no subscriber: each publisher checks `hasSubscribers` first.

const PREFIX = 'fastify-fork-safe-db'

/** The names to pass to `diagnostics_channel.tracingChannel(…)`, e.g. `tracingChannel(tracingChannels.query)`. */
export const tracingChannels = Object.freeze({
  /** A borrow of a pool connection, with its wait (refused borrows too). */
  acquire: `${PREFIX}:acquire`,
  /** A builder's or `raw()`'s statement, from sent to answered. */
  query: `${PREFIX}:query`,
  /** A transaction (or a savepoint), from its BEGIN's success to its COMMIT or ROLLBACK. */
  transaction: `${PREFIX}:transaction`,
  /** A KILL QUERY for a statement that timed out or whose client went away, until it is done or given up. */
  cancel: `${PREFIX}:cancel`,
  /** One connect attempt through a host's breaker (held-back attempts make none). */
  connect: `${PREFIX}:connect`
} as const)

/**
 * What every tracing context carries. `error` is set (before `error` is published) to what the
 * caller gets: the plugin's coded error, or the driver's with its message sanitized.
 */
export interface TraceContext {
  readonly pool: PoolIdentity
  /** The failure, as the caller gets it; set before `error` is published. */
  error?: unknown
  /** The failure's code (`ER_DUP_ENTRY`, `FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT`, …); set with `error`. */
  errorCode?: string
}

export interface AcquireTraceContext extends TraceContext {
  /** A borrow of the plugin's own (warm-up, the idle keeper, a health check), not a query's. */
  readonly internal: boolean
  /** The connection lent (set at asyncStart; undefined when the borrow failed). */
  connectionId?: number | null
  /** Its host, `host:port` or the socket path (set at asyncStart; undefined when the borrow failed). */
  host?: string
  /** How long the borrow waited (set at asyncStart, either way). */
  waitMillis?: number
}

/** A statement's trace: the fields of its `query:start` event (the same `queryId`), and its duration. */
export interface QueryTraceContext extends TraceContext, QueryStartEvent {
  /** From sent to answered (set at asyncStart). */
  durationMillis?: number
}

export interface TransactionTraceContext extends TraceContext {
  /** Unique in this process; the same as its `transaction:begin`/`transaction:end` events'. */
  readonly transactionId: number
  /** A savepoint inside another transaction. */
  readonly nested: boolean
  /** 1, or which run of a callback retried with `{ retries }` this is. */
  readonly attempt: number
  /** The transaction's connection (its BEGIN's). */
  readonly connectionId: number | null | undefined
  /** `committed` or `rolled back` (set at asyncStart). */
  outcome?: 'committed' | 'rolled back'
  /** Its request's id and route, for `request.db`'s transactions: the request adopts a transaction after its BEGIN, so these are set at asyncStart. */
  requestId?: string
  route?: string
  /** From its BEGIN's success to its end (set at asyncStart). */
  durationMillis?: number
}

export interface CancelTraceContext extends TraceContext {
  /** The statement's host, where the KILL goes. */
  readonly host: string
  /** The thread whose statement is killed. */
  readonly connectionId: number | null
  /** Why (`its query timed out`, `the client went away`). */
  readonly reason: string
  /** From the cancel to the KILL's answer, or to giving up (set at asyncStart). */
  durationMillis?: number
}

export interface ConnectTraceContext extends TraceContext {
  /** The host tried, `host:port` or the socket path. */
  readonly host: string
  /** Its breaker's state as the attempt began: `closed`, or `half-open` (a probe after failures). */
  readonly breaker: 'closed' | 'half-open'
  /** The new connection's thread id (set at asyncStart when it connected). */
  connectionId?: number | null
  /** How long the attempt took (set at asyncStart, either way). */
  connectMillis?: number
}

export const acquireTrace: TracingChannel<unknown, AcquireTraceContext> = tracingChannel(tracingChannels.acquire)
export const queryTrace: TracingChannel<unknown, QueryTraceContext> = tracingChannel(tracingChannels.query)
export const transactionTrace: TracingChannel<unknown, TransactionTraceContext> = tracingChannel(tracingChannels.transaction)
export const cancelTrace: TracingChannel<unknown, CancelTraceContext> = tracingChannel(tracingChannels.cancel)
export const connectTrace: TracingChannel<unknown, ConnectTraceContext> = tracingChannel(tracingChannels.connect)

/**
 * Traces `run` as Node's `tracePromise` does (start and end around the call, in the start
 * channel's stores; asyncStart and asyncEnd when it settles; error first on a failure), but
 * returns `run`'s own promise, and leaves its value out of the context: tracePromise would put
 * the value (rows, a connection) on `context.result`. `settle` fills the context's outcome
 * fields, with the milliseconds since the start, before asyncStart (and after `error` and
 * `errorCode` are set on a failure, before `error` is published). The caller checks
 * `hasSubscribers` first.
 */
export function traced<C extends TraceContext, T> (
  channel: TracingChannel<unknown, C>, context: NoInfer<C>, run: () => Promise<T>, settle: (context: C, value: T | undefined, millis: number) => void
): Promise<T> {
  const started = performance.now()
  const failed = (error: unknown) => {
    context.error = error
    const errorCode = codeOf(error)
    if (errorCode !== undefined) context.errorCode = errorCode
  }
  const promise = channel.start.runStores(context, () => {
    try {
      return run()
    } catch (error) {
      failed(error)
      channel.error.publish(context)
      throw error
    } finally {
      channel.end.publish(context)
    }
  })
  promise.then((value) => {
    settle(context, value, performance.now() - started)
    channel.asyncStart.publish(context)
    channel.asyncEnd.publish(context)
  }, (error: unknown) => {
    failed(error)
    settle(context, undefined, performance.now() - started)
    channel.error.publish(context)
    channel.asyncStart.publish(context)
    channel.asyncEnd.publish(context)
  })
  return promise
}
