import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Readable } from 'node:stream'
import knex, { type Knex } from 'knex'
import { FST_FORK_SAFE_DB_UNSUPPORTED_VERSION } from '../errors'

// The one place that knows knex's, tarn's and mysql2's undocumented parts.
//
// The plugin extends knex where knex invites it: its mysql2 dialect is a class, knex accepts a
// class as `client`, and transactions build their clients from that class's prototype. Beyond
// that it reads and writes a few fields none of the three documents: tarn's lists of free and
// borrowed connections and its live min/max, the marks knex puts on a connection
// (`__knexUid`, `__knex__disposed`, `__knexLifetimeLimit`), the timeout fields of a compiled
// query, and the socket under a mysql2 connection. Each is named here and nowhere else, and
// checked once: knex's and tarn's when the plugin registers, mysql2's on the first connection
// (its fields exist only once one does). A release that moves one fails with
// FST_FORK_SAFE_DB_UNSUPPORTED_VERSION naming all three versions, never with a guarantee
// silently lost. `test/internals.test.ts` keeps other modules from naming these fields.

/** The socket under a mysql2 connection (a net.Socket or TLS socket). */
export interface DriverSocket {
  destroy: (error?: Error) => void
  readonly readableEnded?: boolean
  readonly writable?: boolean
}

type Callback<T = unknown> = (error: Error | null, result?: T) => void

/** A mysql2 connection as knex pools it: the parts the plugin uses. */
export interface DriverConnection extends NodeJS.EventEmitter {
  readonly threadId: number | null
  readonly config: object
  ping: (callback: (error: Error | null) => void) => void
  query: (sql: string, values: unknown[], callback: Callback<Array<Record<string, unknown>>>) => void
  connect: (callback: (error: Error | null) => void) => void
  end: (callback?: (error?: Error | null) => void) => void
  destroy: () => void
}

/** mysql2's module, as knex calls it. */
export interface Driver {
  createConnection: (settings: object) => DriverConnection
}

/** What knex compiles a statement into (the object its runner and `client.query` pass around). */
export interface CompiledQuery {
  sql: string
  bindings?: readonly unknown[]
  method?: string
}

/**
 * knex's mysql2 client with the members the plugin overrides or calls. Declared rather than
 * taken from knex's typings, which give `cancelQuery` no parameter and omit `checkVersion`.
 */
// Method signatures, not properties: the plugin's classes override them as methods.
export interface DialectClient extends NodeJS.EventEmitter {
  config: Knex.Config
  connectionSettings: object
  driver: Driver
  /** knex's public field: the tarn pool, undefined once destroyed. */
  pool?: unknown
  acquireConnection (): Promise<DriverConnection>
  releaseConnection (connection: DriverConnection): Promise<void>
  acquireRawConnection (): Promise<DriverConnection>
  destroyRawConnection (connection: DriverConnection): Promise<void>
  validateConnection (connection: DriverConnection): boolean | Promise<boolean>
  cancelQuery (connection: DriverConnection): Promise<unknown>
  checkVersion (connection: DriverConnection): Promise<unknown>
  query (connection: DriverConnection, query: CompiledQuery | string): Promise<unknown>
  runner (builder: object): unknown
  transaction (container: (trx: Knex.Transaction) => unknown, config?: Knex.TransactionConfig, outerTx?: unknown): unknown
  initializePool (config?: Knex.Config): void
  destroy (callback?: (error?: unknown) => void): Promise<void>
}

/** knex's runner (one per statement run): the parts the plugin's subclass reads. */
export interface KnexRunner {
  readonly client: DialectClient
  readonly builder: object
  readonly connection: DriverConnection | undefined
  query (query: CompiledQuery): Promise<unknown>
  /** Borrows a connection (unless the builder or runner has one) and runs `callback` on it. */
  ensureConnection (callback: (runner: KnexRunner, params?: unknown) => unknown, params?: unknown): Promise<unknown>
}

// knex accepts a class as `client`, but not every release lets its dialect classes be required by
// path (3.2.0's exports map hides lib/, later 3.2 releases expose it in two different ways). So
// they are taken from a knex instance built without a connection, which opens nothing, loads no
// driver and starts no timer; the shape check below covers what the plugin relies on.
const probe = knex({ client: 'mysql2' })
export const KnexMySql2Client = probe.client.constructor as new (config: Knex.Config) => DialectClient
export const KnexRunnerBase = (probe.client.runner(probe.queryBuilder()) as object).constructor as new (client: DialectClient, builder: object) => KnexRunner

// ---- tarn's pool -------------------------------------------------------------------------------

interface TarnResource { resource: DriverConnection, settle: () => void }

/** tarn's pool as knex creates it. Counts, acquire/release and events are tarn's public API. */
export interface TarnPool {
  acquire: () => { promise: Promise<DriverConnection> }
  numUsed: () => number
  numFree: () => number
  numPendingAcquires: () => number
  numPendingCreates: () => number
  release: (connection: DriverConnection) => boolean
  on: (event: 'createSuccess' | 'destroySuccess' | 'release', listener: (...args: never[]) => void) => void
}

interface TarnPoolFields extends TarnPool {
  min: number
  max: number
  used: TarnResource[]
  free: TarnResource[]
  pendingAcquires: unknown[]
  destroyed: boolean
  eventId: number
  /** knex's `pool.validate`: its own marks, then the client's validateConnection. */
  validate: (connection: DriverConnection) => unknown
  _startReaping: () => void
  _destroy: (connection: DriverConnection) => Promise<unknown>
  _tryAcquireOrCreate: () => void
  _executeEventHandlers: (event: string, ...args: unknown[]) => void
}

// tarn's own timeout error (an acquire that waited too long), from the tarn knex depends on.
const tarnRoot = packageRoot('tarn', packageRoot('knex'))
const TarnTimeoutError = (require(tarnRoot ?? 'tarn') as { TimeoutError: new () => Error }).TimeoutError

/** Whether `error` is tarn's: no connection became free within the acquire timeout. */
export function isAcquireTimeout (error: unknown): boolean {
  return error instanceof TarnTimeoutError
}

/** The client's tarn pool, or undefined once it has been destroyed. */
export function poolOf (client: { pool?: unknown }): TarnPool | undefined {
  return client.pool as TarnPool | undefined
}

/** Connections lent out right now (including those being validated for a borrower). */
export function borrowedConnections (pool: TarnPool): DriverConnection[] {
  return (pool as TarnPoolFields).used.map((used) => used.resource)
}

/** Connections idle in the pool right now. */
export function idleConnections (pool: TarnPool): DriverConnection[] {
  return (pool as TarnPoolFields).free.map((free) => free.resource)
}

export function poolSize (pool: TarnPool): { min: number, max: number } {
  const { min, max } = pool as TarnPoolFields
  return { min, max }
}

/** tarn reads min and max on every decision, so a live change takes effect at once. */
export function resizePool (pool: TarnPool, size: { min: number, max: number }): void {
  const fields = pool as TarnPoolFields
  fields.max = size.max
  fields.min = size.min
}

// A direct borrow (pool/direct-borrow.ts) does what tarn's acquire does for a free connection,
// step for step, without tarn's queue: the connection moves from the free list to the borrowed
// one before its check, tarn's listeners hear the same events with the same ids, and a connection
// that fails its check is destroyed as tarn destroys one.

/** A free connection moved to tarn's borrowed list, not lent out yet. */
export interface TakenConnection {
  readonly connection: DriverConnection
  readonly resource: TarnResource
  readonly eventId: number
}

/** The connection tarn would lend next (the last one released), if one is free and no acquire waits. */
export function nextFree (pool: TarnPool): DriverConnection | undefined {
  const fields = pool as TarnPoolFields
  if (fields.destroyed || fields.pendingAcquires.length > 0) return undefined
  return fields.free[fields.free.length - 1]?.resource
}

/** Moves the last free connection to the borrowed list (the caller checked nextFree()). */
export function takeFree (pool: TarnPool): TakenConnection {
  const fields = pool as TarnPoolFields
  const eventId = fields.eventId++
  fields._executeEventHandlers('acquireRequest', eventId)
  const resource = fields.free.pop() as TarnResource
  fields.used.push(resource)
  return { connection: resource.resource, resource, eventId }
}

/** The check tarn runs on a connection it lends: knex's `pool.validate`. */
export function validateAsTarn (pool: TarnPool, connection: DriverConnection): unknown {
  return (pool as TarnPoolFields).validate(connection)
}

/** The taken connection passed its check: it is lent out. */
export function lendTaken (pool: TarnPool, taken: TakenConnection): DriverConnection {
  const fields = pool as TarnPoolFields
  fields._startReaping()
  fields._executeEventHandlers('acquireSuccess', taken.eventId, taken.connection)
  return taken.connection
}

/** The taken connection failed its check: destroyed, and its place offered to waiting acquires. */
export function dropTaken (pool: TarnPool, taken: TakenConnection): void {
  const fields = pool as TarnPoolFields
  const index = fields.used.indexOf(taken.resource)
  if (index !== -1) fields.used.splice(index, 1)
  taken.resource.settle()
  // tarn's _destroy reports its own failures to the pool's listeners; it never rejects.
  fields._destroy(taken.connection)
  fields._tryAcquireOrCreate()
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

// ---- knex's streamed statements --------------------------------------------------------------------

/** The stream of a streamed statement, from what knex's runner passes its connection callback. */
export function streamOfCallback (params: unknown): Readable | undefined {
  const stream = (params as { stream?: Readable } | undefined)?.stream
  return typeof stream?.once === 'function' ? stream : undefined
}

// ---- a compiled query's timeout -------------------------------------------------------------------

interface TimedQuery extends CompiledQuery {
  timeout?: number | false
  cancelOnTimeout?: boolean
}

/** The statement's own `.timeout()`, if it has one. */
export function timeoutOf (query: CompiledQuery): number | undefined {
  const { timeout } = query as TimedQuery
  return typeof timeout === 'number' && timeout > 0 ? timeout : undefined
}

// ---- mysql2's connection -------------------------------------------------------------------------

interface Mysql2Fields {
  stream?: DriverSocket
}

/** The socket under the connection (undefined only before mysql2 made one). */
export function socketOf (connection: DriverConnection): DriverSocket | undefined {
  return (connection as Mysql2Fields).stream
}

// ---- the shape check ------------------------------------------------------------------------------

const KNEX_CLIENT_METHODS = [
  'acquireConnection', 'releaseConnection', 'acquireRawConnection', 'destroyRawConnection', 'validateConnection',
  'cancelQuery', 'checkVersion', 'query', 'runner', 'initializePool', 'destroy', 'transaction'
] as const
const KNEX_RUNNER_METHODS = ['run', 'query', 'ensureConnection'] as const
const TARN_METHODS = ['numUsed', 'numFree', 'numPendingAcquires', 'numPendingCreates', 'release', 'on', 'acquire', 'destroy'] as const
// What a direct borrow calls: tarn's own steps of an acquire.
const TARN_INNER_METHODS = ['validate', '_startReaping', '_destroy', '_tryAcquireOrCreate', '_executeEventHandlers'] as const
const MYSQL2_METHODS = ['ping', 'query', 'connect', 'end', 'destroy', 'on'] as const

/** "knex 3.3.0, tarn 3.1.2, mysql2 3.24.6", as installed next to the plugin. */
export function installedVersions (): string {
  const knexRoot = packageRoot('knex')
  return `knex ${versionAt(knexRoot)}, tarn ${versionAt(packageRoot('tarn', knexRoot))}, mysql2 ${versionAt(packageRoot('mysql2'))}`
}

// From the package's main file and the package.json beside it: not every release exports
// `<name>/package.json`.
function packageRoot (name: string, from?: string): string | undefined {
  try {
    let directory = dirname(require.resolve(name, from === undefined ? undefined : { paths: [from] }))
    while (!directory.endsWith(join('node_modules', name)) && dirname(directory) !== directory) directory = dirname(directory)
    return directory
  } catch {
    return undefined
  }
}

function versionAt (root: string | undefined): string {
  try {
    return String((JSON.parse(readFileSync(join(root ?? '', 'package.json'), 'utf8')) as { version?: unknown }).version)
  } catch {
    return 'not found'
  }
}

function unsupported (what: string): Error {
  return new FST_FORK_SAFE_DB_UNSUPPORTED_VERSION(what, installedVersions())
}

function expectMethods (owner: string, target: unknown, names: readonly string[]): void {
  for (const name of names) {
    if (typeof (target as Record<string, unknown> | undefined)?.[name] !== 'function') throw unsupported(`${owner}.${name}()`)
  }
}

let checkedKnex = false

/** Checks knex's and tarn's parts once per process; throws FST_FORK_SAFE_DB_UNSUPPORTED_VERSION. */
export function checkKnexInternals (): void {
  if (checkedKnex) return
  expectMethods('knex\'s mysql2 client', KnexMySql2Client.prototype, KNEX_CLIENT_METHODS)
  expectMethods('knex\'s runner', KnexRunnerBase.prototype, KNEX_RUNNER_METHODS)
  checkedKnex = true
}

/** Checks a pool knex has just built (tarn's fields exist only on an instance). */
export function checkPool (pool: unknown): asserts pool is TarnPool {
  expectMethods('tarn\'s pool', pool, TARN_METHODS)
  const fields = pool as Partial<TarnPoolFields>
  if (!Array.isArray(fields.used)) throw unsupported('tarn\'s pool.used')
  if (!Array.isArray(fields.free)) throw unsupported('tarn\'s pool.free')
  if (typeof fields.min !== 'number' || typeof fields.max !== 'number') throw unsupported('tarn\'s pool.min / pool.max')
  if (!Array.isArray(fields.pendingAcquires)) throw unsupported('tarn\'s pool.pendingAcquires')
  if (typeof fields.destroyed !== 'boolean' || typeof fields.eventId !== 'number') throw unsupported('tarn\'s pool.destroyed / pool.eventId')
  expectMethods('tarn\'s pool', pool, TARN_INNER_METHODS)
}

let checkedConnection = false

/** Checks the first connection mysql2 opened; later ones share its class. */
export function checkDriverConnection (connection: DriverConnection): void {
  if (checkedConnection) return
  expectMethods('mysql2\'s connection', connection, MYSQL2_METHODS)
  const socket = socketOf(connection)
  if (socket === undefined || typeof socket.destroy !== 'function') throw unsupported('mysql2\'s connection.stream')
  if (typeof connection.threadId !== 'number') throw unsupported('mysql2\'s connection.threadId')
  checkedConnection = true
}

/** Whether knex will cancel the statement on the server when its timeout expires. */
export function cancelsOnTimeout (query: CompiledQuery): boolean {
  return (query as TimedQuery).cancelOnTimeout === true
}
