import { performance } from 'node:perf_hooks'
import type { Knex } from 'knex'
import { clientOfTransaction, disposedReason, isTransactionStatement, KnexMySql2Client, lifetimeLimit } from '../driver/knex-parts'
import { poolFromKnexSettings, poolOf, type ForkSafeTarnPool } from '../driver/tarn-pool'
import type { CompiledQuery, DriverConnection } from '../driver/types'
import { checkPool } from '../driver/versions'
import { codeOf, poolConnect, poolDestroy, poolRelease, queryTimeout, transactionBegin, transactionEnd, type DestroyReason, type PoolIdentity } from '../events/channels'
import { acquireGuarded } from '../pool/acquire-guard'
import { connectionState } from '../pool/connection-state'
import { TIMED_OUT } from '../query/cancel'
import { classifyStatementError } from '../query/classify-error'
import { boundTransactionStatement } from '../query/timeout'
import { settleOnTimedOutTransaction } from '../query/transaction-timeout'
import { openConnection } from './connect'
import { ForkSafeRunner } from './fork-safe-runner'
import { runtimeOf } from './runtime'

// The plugin's knex client: knex's mysql2 dialect with the plugin's guarantees, as a subclass.
// knex builds each transaction's client with Object.create(client.constructor.prototype), so
// every method here holds inside transactions too; each finds its state through `config` (see
// runtime.ts) and never through a field or #private member of its own `this`, which a
// transaction's client does not have.

let transactionIds = 0
/** The last transaction statement a transaction's client ran: tells a commit from a rollback. */
const LAST_STATEMENT = Symbol('fastify-fork-safe-db:last-transaction-statement')
type TransactionClient = { [LAST_STATEMENT]?: string }

export class ForkSafeClient extends KnexMySql2Client {
  constructor (config: Knex.Config) {
    super(config)
    runtimeOf(this).client = this
  }

  /** Fail fast when saturated or while the database is down; coded timeouts; every borrow published. */
  override acquireConnection (): Promise<DriverConnection> {
    return acquireGuarded(this, runtimeOf(this), true)
  }

  /**
   * Starts the connection's idle clock (the borrow check's). One released after the pool was
   * destroyed (a close deadline gave it back) is let go.
   */
  override releaseConnection (connection: DriverConnection): Promise<void> {
    const pool = poolOf(this)
    if (pool === undefined) return Promise.resolve()
    const runtime = runtimeOf(this)
    runtime.borrowCheck.markIdle(connection)
    pool.release(connection)
    if (poolRelease.hasSubscribers) poolRelease.publish({ pool: runtime.identity, connectionId: connection.threadId })
    return Promise.resolve()
  }

  /** Through the breaker, refused while closing, tracked, set up (see connect.ts). */
  override acquireRawConnection (): Promise<DriverConnection> {
    return openConnection(this, runtimeOf(this), 'pool')
  }

  /** Gracefully (COM_QUIT) unless the close deadline passed: then the server is not answering. */
  override destroyRawConnection (connection: DriverConnection): Promise<void> {
    if (!runtimeOf(this).tornDown) return super.destroyRawConnection(connection)
    connection.destroy()
    return Promise.resolve()
  }

  /** The borrow check: a dead connection is replaced, never handed out (see pool/borrow-check.ts). */
  override validateConnection (connection: DriverConnection): boolean | Promise<boolean> {
    return runtimeOf(this).borrowCheck.validate(connection)
  }

  /** knex calls this when a statement times out with `cancel: true`: answer at once, KILL in the background. */
  override cancelQuery (connection: DriverConnection): Promise<void> {
    runtimeOf(this).canceller.cancel(connection, TIMED_OUT)
    return Promise.resolve()
  }

  /**
   * A transaction's own statements (strings, not compiled queries) get the query timeout too; on
   * a transaction whose connection a timed-out statement closed they settle at once.
   */
  override query (connection: DriverConnection, query: CompiledQuery | string): Promise<unknown> {
    if (!isTransactionStatement(query)) return super.query(connection, query)
    if (transactionEnd.hasSubscribers) (this as TransactionClient)[LAST_STATEMENT] = query
    const settled = settleOnTimedOutTransaction(connection, query)
    if (settled !== undefined) return settled
    const runtime = runtimeOf(this)
    const timeoutMillis = runtime.options.queryTimeoutMillis
    const timedOut = () => {
      if (queryTimeout.hasSubscribers) queryTimeout.publish({ pool: runtime.identity, queryId: undefined, connectionId: connection.threadId, timeoutMillis, inTransaction: true })
    }
    return boundTransactionStatement(connection, query, timeoutMillis, () => super.query(connection, query), timedOut)
      .catch((error: unknown) => { throw classifyStatementError(error, runtime.options.decorator, query) })
  }

  override runner (builder: object): ForkSafeRunner {
    return new ForkSafeRunner(this, builder)
  }

  /**
   * knex hands a transaction whose BEGIN (or SAVEPOINT) failed to its container all the same,
   * and `await knex.transaction()` resolves with it: every query on it then fails with
   * "Transaction query already complete", hiding the cause (a timeout, a lost connection).
   * Such a transaction is not handed out; its promise rejects with the BEGIN's own error.
   */
  override transaction (container: (trx: Knex.Transaction) => unknown, config?: Knex.TransactionConfig, outerTx?: unknown): unknown {
    return super.transaction((trx) => {
      if (trx.isCompleted()) return undefined
      if (transactionBegin.hasSubscribers || transactionEnd.hasSubscribers) observeTransaction(runtimeOf(this).identity, trx, outerTx !== undefined && outerTx !== null)
      return container(trx)
    }, config, outerTx)
  }

  /**
   * knex's pool, built as the plugin's tarn subclass (driver/tarn-pool.ts) from knex's own
   * settings; also after `knex.destroy(); knex.initialize()`, where the new pool is watched like
   * the first. A pool knex was handed (`connectionPool`) or already has stays knex's business.
   */
  override initializePool (config: Knex.Config = this.config): void {
    if (this.pool !== undefined || (config as { connectionPool?: unknown }).connectionPool !== undefined) {
      super.initializePool(config)
      return
    }
    const pool = poolFromKnexSettings(this.getPoolSettings(config.pool))
    checkPool(pool)
    this.pool = pool
    const { identity } = runtimeOf(this)
    pool.on('createSuccess', (_eventId, connection) => {
      if (poolConnect.hasSubscribers) poolConnect.publish({ pool: identity, connectionId: connection.threadId, connectMillis: connectionState(connection)?.connectMillis ?? 0 })
    })
    pool.on('destroySuccess', (_eventId, connection) => {
      if (poolDestroy.hasSubscribers) poolDestroy.publish({ pool: identity, connectionId: connection.threadId, reason: destroyReason(pool, connection) })
    })
  }

  /** A warm-up in progress stops waiting for connections the destroyed pool would never give. */
  override destroy (callback?: (error?: unknown) => void): Promise<void> {
    runtimeOf(this).warmUpStop.abort()
    return super.destroy(callback)
  }
}

function destroyReason (pool: ForkSafeTarnPool, connection: DriverConnection): DestroyReason {
  if (pool.isDestroyed) return 'closed'
  if (disposedReason(connection) !== undefined) return 'broken'
  const limit = lifetimeLimit(connection)
  return limit !== undefined && limit <= performance.now() ? 'expired' : 'retired'
}

/** Publishes the transaction's begin now and its end when it settles. */
function observeTransaction (identity: PoolIdentity, trx: Knex.Transaction, nested: boolean): void {
  const transactionId = ++transactionIds
  const started = performance.now()
  if (transactionBegin.hasSubscribers) transactionBegin.publish({ pool: identity, transactionId, nested })
  const client = clientOfTransaction(trx) as TransactionClient
  const ended = (error: unknown) => {
    if (!transactionEnd.hasSubscribers) return
    const rolledBack = error !== undefined || /^\s*ROLLBACK\b/i.test(client[LAST_STATEMENT] ?? '')
    const errorCode = codeOf(error)
    transactionEnd.publish({
      pool: identity,
      transactionId,
      outcome: rolledBack ? 'rolled back' : 'committed',
      durationMillis: performance.now() - started,
      ...(errorCode === undefined ? {} : { errorCode })
    })
  }
  trx.executionPromise.then(() => ended(undefined), (error: unknown) => ended(error ?? new Error('rolled back')))
}
