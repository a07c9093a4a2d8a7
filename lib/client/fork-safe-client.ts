import { performance } from 'node:perf_hooks'
import type { Knex } from 'knex'
import { clientOfTransaction, disposedReason, isTransactionStatement, KnexMySql2Client, lifetimeLimit } from '../driver/knex-parts'
import { poolFromKnexSettings, poolOf, type ForkSafeTarnPool } from '../driver/tarn-pool'
import type { CompiledQuery, DriverConnection } from '../driver/types'
import { checkPool } from '../driver/versions'
import { codeOf, poolConnect, poolDestroy, poolRelease, queryTimeout, transactionBegin, transactionEnd, type DestroyReason, type PoolIdentity } from '../events/channels'
import { traced, transactionTrace } from '../events/tracing'
import { refusedAnswer } from '../hosts/refused-answer'
import { acquireGuarded } from '../pool/acquire-guard'
import { connectionState, heldMillisOf } from '../pool/connection-state'
import { isRetired } from '../pool/retire'
import { TIMED_OUT } from '../query/cancel'
import { classifyStatementError } from '../query/classify-error'
import { ownerOf } from '../query/owners'
import { outcomeBeforeCommit } from '../query/transaction-outcome'
import { settleFailedTransactionStatement, unsentTransactionStatement } from '../query/transaction-statement'
import { boundTransactionStatement } from '../query/timeout'
import { settleOnTimedOutTransaction } from '../query/transaction-timeout'
import { openConnection } from './connect'
import { ForkSafeRunner } from './fork-safe-runner'
import { attemptOf, refuseRetries } from './transaction-retry'
import { factsOf } from '../telemetry/host-attributes'
import { runtimeOf } from './runtime'

// The plugin's knex client: knex's mysql2 dialect with the plugin's guarantees, as a subclass.
// knex builds each transaction's client with Object.create(client.constructor.prototype), so
// every method here holds inside transactions too; each finds its state through `config` (see
// runtime.ts) and never through a field or #private member of its own `this`, which a
// transaction's client does not have.

let transactionIds = 0
/** The last transaction statement a transaction's client ran: tells a commit from a rollback. */
const LAST_STATEMENT = Symbol('fastify-fork-safe-db:last-transaction-statement')
/** The thread id of a transaction's connection, for its tracing context. */
const THREAD_ID = Symbol('fastify-fork-safe-db:transaction-thread-id')
type TransactionClient = { [LAST_STATEMENT]?: string, [THREAD_ID]?: number | null }

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
    if (isRetired(connection)) {
      // Retired while lent (pool/retire.ts): destroyed, never lent again.
      const heldMillis = heldMillisOf(connection)
      pool.releaseAndDestroy(connection)
      if (poolRelease.hasSubscribers) poolRelease.publish({ pool: runtime.identity, connectionId: connection.threadId, host: runtime.hostLabelOf(connection), heldMillis })
      return Promise.resolve()
    }
    const heldMillis = heldMillisOf(connection)
    runtime.borrowCheck.markIdle(connection)
    pool.release(connection)
    if (poolRelease.hasSubscribers) poolRelease.publish({ pool: runtime.identity, connectionId: connection.threadId, host: runtime.hostLabelOf(connection), heldMillis })
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
    if (transactionEnd.hasSubscribers || transactionTrace.hasSubscribers) {
      const transactionClient = this as TransactionClient
      transactionClient[LAST_STATEMENT] = query
      transactionClient[THREAD_ID] = connection.threadId
    }
    const settled = settleOnTimedOutTransaction(connection, query)
    if (settled !== undefined) return settled
    const runtime = runtimeOf(this)
    const timeoutMillis = runtime.options.queryTimeoutMillis
    const timedOut = () => {
      if (queryTimeout.hasSubscribers) queryTimeout.publish({ pool: runtime.identity, queryId: undefined, connectionId: connection.threadId, timeoutMillis, inTransaction: true })
    }
    const { decorator } = runtime.options
    const unsent = unsentTransactionStatement(connection, query, decorator)
    if (unsent !== undefined) return unsent
    return boundTransactionStatement(connection, query, timeoutMillis, () => super.query(connection, query), timedOut)
      .catch((error: unknown) => {
        // A BEGIN or COMMIT on a demoted server or a node out of the cluster (hosts/refused-answer.ts).
        const refused = refusedAnswer(runtime, connection, error)
        if (refused !== undefined) return refused.then((answer) => settleFailedTransactionStatement(error, answer, query, decorator))
        return settleFailedTransactionStatement(error, classifyStatementError(error, decorator, query), query, decorator)
      })
  }

  override runner (builder: object): ForkSafeRunner {
    return new ForkSafeRunner(this, builder)
  }

  /**
   * knex hands a transaction whose BEGIN (or SAVEPOINT) failed to its container all the same,
   * and `await knex.transaction()` resolves with it: every query on it then fails with
   * "Transaction query already complete", hiding the cause (a timeout, a lost connection).
   * Such a transaction is not handed out; its promise rejects with the BEGIN's own error.
   * A top-level callback that fails because the transaction was lost or rolled back by the
   * server rejects the transaction's promise with FST_FORK_SAFE_DB_TRANSACTION_ABORTED (see
   * query/transaction-outcome.ts); a savepoint's callback keeps its error, which its enclosing
   * callback's promise then maps. `retries` reaches this far only where it cannot apply (the
   * promise form, a savepoint: see transaction-retry.ts): it is refused.
   */
  override transaction (container: (trx: Knex.Transaction) => unknown, config?: Knex.TransactionConfig, outerTx?: unknown): unknown {
    const nested = outerTx !== undefined && outerTx !== null
    try {
      refuseRetries(config, nested)
    } catch (error) {
      return Promise.reject(error)
    }
    const { decorator } = runtimeOf(this).options
    return super.transaction((trx) => {
      if (trx.isCompleted()) return undefined
      const traceIt = transactionTrace.hasSubscribers
      // Nobody listens (the usual case): no closure for this transaction.
      if (!traceIt && !transactionBegin.hasSubscribers && !transactionEnd.hasSubscribers) return nested ? container(trx) : withOutcome(container, trx, decorator)
      const run = () => nested ? container(trx) : withOutcome(container, trx, decorator)
      const transactionId = observeTransaction(runtimeOf(this).identity, trx, nested, attemptOf(config))
      return traceIt ? tracedTransaction(runtimeOf(this).identity, trx, transactionId, nested, attemptOf(config), run) : run()
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
    const runtime = runtimeOf(this)
    const { identity } = runtime
    pool.on('createSuccess', (_eventId, connection) => {
      if (poolConnect.hasSubscribers) {
        poolConnect.publish({ pool: identity, connectionId: connection.threadId, host: runtime.hostLabelOf(connection), connectMillis: connectionState(connection)?.connectMillis ?? 0, ...factsOf(connection) })
      }
    })
    pool.on('destroySuccess', (_eventId, connection) => {
      if (poolDestroy.hasSubscribers) poolDestroy.publish({ pool: identity, connectionId: connection.threadId, host: runtime.hostLabelOf(connection), reason: destroyReason(pool, connection) })
      // A retired connection is gone: back to pool.min (pool/retire.ts).
      if (isRetired(connection)) runtime.refill.request(pool).catch(() => {})
    })
  }

  /** A warm-up in progress stops waiting for connections the destroyed pool would never give. */
  override destroy (callback?: (error?: unknown) => void): Promise<void> {
    runtimeOf(this).warmUpStop.abort()
    return super.destroy(callback)
  }
}

/** The container's result, its rejection as the transaction's outcome (a synchronous throw too). */
function withOutcome (container: (trx: Knex.Transaction) => unknown, trx: Knex.Transaction, decorator: string): unknown {
  let result: unknown
  try {
    result = container(trx)
  } catch (error) {
    throw outcomeBeforeCommit(error, decorator)
  }
  if (typeof (result as PromiseLike<unknown> | null)?.then !== 'function') return result
  return Promise.resolve(result).catch((error: unknown) => { throw outcomeBeforeCommit(error, decorator) })
}

function destroyReason (pool: ForkSafeTarnPool, connection: DriverConnection): DestroyReason {
  if (pool.isDestroyed) return 'closed'
  if (isRetired(connection)) return 'retired'
  if (disposedReason(connection) !== undefined) return 'broken'
  const limit = lifetimeLimit(connection)
  return limit !== undefined && limit <= performance.now() ? 'expired' : 'retired'
}

/** Publishes the transaction's begin now and its end when it settles; returns its id. */
function observeTransaction (identity: PoolIdentity, trx: Knex.Transaction, nested: boolean, attempt: number): number {
  const transactionId = ++transactionIds
  if (!transactionBegin.hasSubscribers && !transactionEnd.hasSubscribers) return transactionId
  const started = performance.now()
  if (transactionBegin.hasSubscribers) transactionBegin.publish({ pool: identity, transactionId, nested, attempt })
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
  return transactionId
}

/**
 * Runs the container (`run`) traced on the `transaction` tracing channel, in the start channel's
 * stores, until the transaction settles; returns the container's result to knex.
 */
function tracedTransaction (identity: PoolIdentity, trx: Knex.Transaction, transactionId: number, nested: boolean, attempt: number, run: () => unknown): unknown {
  const client = clientOfTransaction(trx) as TransactionClient
  let result: unknown
  const context = { pool: identity, transactionId, nested, attempt, connectionId: client[THREAD_ID] }
  traced(transactionTrace, context, () => { result = run(); return trx.executionPromise }, (traceContext, _value, millis) => {
    traceContext.durationMillis = millis
    traceContext.outcome = traceContext.error === undefined && !/^\s*ROLLBACK\b/i.test(client[LAST_STATEMENT] ?? '') ? 'committed' : 'rolled back'
    const owner = ownerOf(client, client)
    if (owner !== undefined) {
      traceContext.requestId = owner.requestId
      traceContext.route = owner.route
    }
  }).catch(() => {})
  return result
}
