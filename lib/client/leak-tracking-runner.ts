import { isTransactionClient } from '../driver/knex-parts'
import type { KnexRunner } from '../driver/types'
import { ForkSafeRunner } from './fork-safe-runner'
import { runtimeOf } from './runtime'

// The runner of a registration with leak detection (client/leak-tracking-client.ts): a statement
// that borrowed a connection names its builder as the connection's borrower, as soon as it has
// the connection. Inside a transaction the transaction is the borrower (named at its BEGIN).

export class LeakTrackingRunner extends ForkSafeRunner {
  override ensureConnection (callback: (runner: KnexRunner, params?: unknown) => unknown, params?: unknown): Promise<unknown> {
    const leaks = runtimeOf(this.client).leaks
    if (leaks === undefined || isTransactionClient(this.client)) return super.ensureConnection(callback, params)
    return super.ensureConnection((runner, more) => {
      if (runner.connection !== undefined) leaks.heldBy(runner.connection, this.builder, this.client)
      return callback(runner, more)
    }, params)
  }
}
