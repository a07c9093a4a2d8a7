import type { Readable } from 'node:stream'
import knex, { type Knex } from 'knex'
import { FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT } from '../errors'
import type { CompiledQuery, DialectClient, DriverConnection, KnexRunner } from './types'

// knex's parts the plugin relies on and knex does not document: its dialect and runner classes
// (the plugin subclasses them), the marks it puts on a connection (`__knexUid`,
// `__knex__disposed`, `__knexLifetimeLimit`), the shape of what its runner and transactions pass
// around (compiled queries and their timeout fields, a transaction's own statements as strings,
// a stream's callback parameters), and the fields it copies onto errors. Named here and nowhere
// else (test/internals.test.ts holds every other module to that); checked by versions.ts.

// knex accepts a class as `client`, but not every release lets its dialect classes be required by
// path (3.2.0's exports map hides lib/, later 3.2 releases expose it in two different ways). So
// they are taken from a knex instance built without a connection, which opens nothing, loads no
// driver and starts no timer; the shape check covers what the plugin relies on.
const probe = knex({ client: 'mysql2' })
export const KnexMySql2Client = probe.client.constructor as new (config: Knex.Config) => DialectClient
export const KnexRunnerBase = (probe.client.runner(probe.queryBuilder()) as object).constructor as new (client: DialectClient, builder: object) => KnexRunner

// knex's runner copies a statement and its bound values onto any KnexTimeoutError raised while
// acquiring a connection (`error.sql`, `error.bindings`); on the plugin's they are not kept, so no
// log line or response can carry them.
for (const field of ['sql', 'bindings']) {
  Object.defineProperty(FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT.prototype, field, { get: () => undefined, set: () => {}, configurable: true })
}

/**
 * Whether knex's check of a borrow can only be the plugin's and knex's own marks: no
 * `pool.validate` of the user's and no connection function whose settings can expire, since
 * either runs user code that tarn's acquire deadline would bound.
 */
export function validationIsBounded (client: DialectClient): boolean {
  const fields = client as DialectClient & { connectionConfigExpirationChecker?: unknown }
  return (client.config.pool as { validate?: unknown } | undefined)?.validate === undefined &&
    (fields.connectionConfigExpirationChecker === undefined || fields.connectionConfigExpirationChecker === null)
}

/** Whether `client` is a transaction's (knex's makeTxClient sets `transacting`, also on a savepoint's). */
export function isTransactionClient (client: DialectClient): boolean {
  return (client as DialectClient & { transacting?: unknown }).transacting === true
}

/** The client a transaction's statements run on (knex builds one per transaction). */
export function clientOfTransaction (trx: Knex.Transaction): object {
  return (trx as unknown as { client: object }).client
}

// ---- knex's marks on a connection ----------------------------------------------------------------

interface KnexMarks {
  __knexUid?: string
  __knex__disposed?: unknown
  __knexLifetimeLimit?: number | null
}

/** Why knex must not lend the connection out again, if anything says so. */
export function disposedReason (connection: DriverConnection): unknown {
  return (connection as KnexMarks).__knex__disposed
}

/** From now on knex destroys the connection instead of lending it out (knex's own mark). */
export function markDisposed (connection: DriverConnection, reason: unknown): void {
  (connection as KnexMarks).__knex__disposed = reason
}

/** When knex will retire the connection (performance.now() time), if it has a lifetime. */
export function lifetimeLimit (connection: DriverConnection): number | undefined {
  return (connection as KnexMarks).__knexLifetimeLimit ?? undefined
}

// ---- what knex's runner and transactions pass around ------------------------------------------------

/** The stream of a streamed statement, from what knex's runner passes its connection callback. */
export function streamOfCallback (params: unknown): Readable | undefined {
  const stream = (params as { stream?: Readable } | undefined)?.stream
  return typeof stream?.once === 'function' ? stream : undefined
}

/**
 * A transaction's own statement (BEGIN, COMMIT, ROLLBACK, SAVEPOINT…): knex's transaction sends
 * it to `client.query` as a bare string, where a builder's statement is a compiled query.
 */
export function isTransactionStatement (query: CompiledQuery | string): query is string {
  return typeof query === 'string'
}

/** Builders that take a `.timeout()` (query builders and raw; schema builders do not). */
export function takesTimeout (builder: object): boolean {
  return typeof (builder as { timeout?: unknown }).timeout === 'function'
}

interface TimedQuery extends CompiledQuery {
  timeout?: number | false
  cancelOnTimeout?: boolean
}

/** The statement's own `.timeout()`, if it has one. */
export function timeoutOf (query: CompiledQuery): number | undefined {
  const { timeout } = query as TimedQuery
  return typeof timeout === 'number' && timeout > 0 ? timeout : undefined
}

/** Whether knex will cancel the statement on the server when its timeout expires. */
export function cancelsOnTimeout (query: CompiledQuery): boolean {
  return (query as TimedQuery).cancelOnTimeout === true
}

// ---- knex's errors -----------------------------------------------------------------------------------

/**
 * Whether `error` is knex's own for a statement that outlived its `.timeout()` of `timeoutMillis`
 * (an acquire timeout is a KnexTimeoutError too; only a statement's carries its limit).
 */
export function isStatementTimeout (error: unknown, timeoutMillis: number): boolean {
  return error instanceof knex.KnexTimeoutError && (error as { timeout?: unknown }).timeout === timeoutMillis
}

/** Whether `error` is a KnexTimeoutError (knex's, or one of the plugin's built on it). */
export function isKnexTimeout (error: unknown): boolean {
  return error instanceof knex.KnexTimeoutError
}

/**
 * Removes what knex copies onto a statement's error: its bound values (`bindings`, on a
 * `.timeout()` error). Returns whether knex marked the error as one of its two timeout errors
 * (expiry, and a cancel that failed), which carry `timeout` and no `code`.
 */
export function stripKnexQueryFields (error: Error): { knexTimeout: boolean } {
  const fields = error as Error & { bindings?: unknown, timeout?: unknown, code?: unknown }
  delete fields.bindings
  return { knexTimeout: fields.timeout !== undefined && fields.code === undefined }
}
