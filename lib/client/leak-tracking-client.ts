import type { Knex } from 'knex'
import { clientOfTransaction, isTransactionClient, isTransactionStatement } from '../driver/knex-parts'
import type { CompiledQuery, DriverConnection } from '../driver/types'
import { captureBorrowSite, markBorrowSite } from '../telemetry/borrow-site'
import { LagFallbackClient } from './lag-fallback-client'
import { LeakTrackingRunner } from './leak-tracking-runner'
import { runtimeOf } from './runtime'

// The client of a registration with `leakDetectionThresholdMillis` (telemetry/leak-detector.ts).
// A subclass, chosen only then (client/build-knex.ts), so other registrations capture no stack
// and pass no check; knex builds transactions' clients from this prototype, so it holds in
// transactions too. It extends the fallback's client, whose one check (is this a connection
// the fallback lent?) is a field read when there is no fallback: one class serves both.
//
// - Where a builder, a raw or a transaction is created, the user's code is on the stack: the
//   stack is captured there (telemetry/borrow-site.ts); by the time knex borrows, only knex's
//   frames are.
// - A connection lent from the pool becomes a holder; it leaves the holders when it goes back.
// - The runner that borrowed it (client/leak-tracking-runner.ts), or the transaction whose BEGIN
//   runs on it, names its borrower; the request id and route are the borrower's (query/owners.ts).

export class LeakTrackingClient extends LagFallbackClient {
  override queryBuilder (): object {
    return marked(this, super.queryBuilder())
  }

  override raw (...args: unknown[]): object {
    return marked(this, super.raw(...args))
  }

  override schemaBuilder (): object {
    return marked(this, super.schemaBuilder())
  }

  override releaseConnection (connection: DriverConnection): Promise<void> {
    runtimeOf(this).leaks?.returned(connection)
    return super.releaseConnection(connection)
  }

  override runner (builder: object): LeakTrackingRunner {
    return new LeakTrackingRunner(this, builder)
  }

  /** A transaction's BEGIN names the transaction's client as its connection's borrower (a savepoint's finds it named). */
  override query (connection: DriverConnection, query: CompiledQuery | string): Promise<unknown> {
    if (isTransactionStatement(query)) runtimeOf(this).leaks?.heldBy(connection, this, this)
    return super.query(connection, query)
  }

  /**
   * The stack is captured when the transaction is begun, and marked on the transaction's client
   * once knex has made it (after BEGIN). A savepoint borrows nothing.
   */
  override transaction (container: (trx: Knex.Transaction) => unknown, config?: Knex.TransactionConfig, outerTx?: unknown): unknown {
    if ((outerTx !== undefined && outerTx !== null) || isTransactionClient(this)) return super.transaction(container, config, outerTx)
    const site = captureBorrowSite()
    return super.transaction((trx) => {
      markBorrowSite(clientOfTransaction(trx), site)
      return container(trx)
    }, config, outerTx)
  }
}

/** Statements inside a transaction borrow nothing: no stack for them. */
function marked (client: LeakTrackingClient, builder: object): object {
  return isTransactionClient(client) ? builder : markBorrowSite(builder)
}
