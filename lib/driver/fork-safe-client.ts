import type { Knex } from 'knex'
import { acquireGuarded } from '../pool/acquire-guard'
import { boundTransactionStatement } from '../query/timeout'
import { TIMED_OUT } from '../query/cancel'
import { classifyStatementError } from '../query/classify-error'
import { settleOnTimedOutTransaction } from '../query/transaction-timeout'
import { openConnection } from './connect'
import { ForkSafeRunner } from './fork-safe-runner'
import { checkPool, KnexMySql2Client, poolOf, type CompiledQuery, type DriverConnection } from './internals'
import { runtimeOf } from './runtime'

// The plugin's knex client: knex's mysql2 dialect with the plugin's guarantees, as a subclass.
// knex builds each transaction's client with Object.create(client.constructor.prototype), so
// every method here holds inside transactions too; each finds its state through `config` (see
// runtime.ts) and never through a field or #private member of its own `this`, which a
// transaction's client does not have.

export class ForkSafeClient extends KnexMySql2Client {
  constructor (config: Knex.Config) {
    super(config)
    runtimeOf(this).client = this
  }

  /** Fail fast when saturated or while the database is down; coded timeouts; cold borrows counted. */
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
    runtimeOf(this).borrowCheck.markIdle(connection)
    pool.release(connection)
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
    if (typeof query !== 'string') return super.query(connection, query)
    const settled = settleOnTimedOutTransaction(connection, query)
    if (settled !== undefined) return settled
    return boundTransactionStatement(connection, query, runtimeOf(this).options.queryTimeoutMillis, () => super.query(connection, query))
      .catch((error: unknown) => { throw classifyStatementError(error, runtimeOf(this).options.decorator, query) })
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
    return super.transaction((trx) => trx.isCompleted() ? undefined : container(trx), config, outerTx)
  }

  /** Also after `knex.destroy(); knex.initialize()`: the new pool is counted and watched like the first. */
  override initializePool (config?: Knex.Config): void {
    super.initializePool(config)
    const pool = poolOf(this)
    if (pool === undefined) return
    checkPool(pool)
    const runtime = runtimeOf(this)
    pool.on('createSuccess', () => { runtime.counters.created += 1 })
    pool.on('destroySuccess', () => { runtime.counters.destroyed += 1 })
  }

  /** A warm-up in progress stops waiting for connections the destroyed pool would never give. */
  override destroy (callback?: (error?: unknown) => void): Promise<void> {
    runtimeOf(this).warmUpStop.abort()
    return super.destroy(callback)
  }
}
