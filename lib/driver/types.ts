import type { Knex } from 'knex'

// The shapes of knex's, tarn's and mysql2's objects as the plugin uses them: declared here, at
// the bottom, so every layer above can name a connection or a client without reaching into one.

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
  /** What `knex('users')`, `knex.select()`, … build on: a new query builder. */
  queryBuilder (): object
  /** What `knex.raw()` builds on: a new raw statement. */
  raw (...args: unknown[]): object
  schemaBuilder (): object
  transaction (container: (trx: Knex.Transaction) => unknown, config?: Knex.TransactionConfig, outerTx?: unknown): unknown
  initializePool (config?: Knex.Config): void
  getPoolSettings (poolConfig: Knex.PoolConfig | undefined): object
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
