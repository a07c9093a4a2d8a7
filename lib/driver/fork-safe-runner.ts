import { FST_FORK_SAFE_DB_CLIENT_GONE } from '../errors'
import { ownerOf } from '../query/owners'
import { TIMED_OUT } from '../query/cancel'
import { classifyStatementError } from '../query/classify-error'
import { asQueryTimeout, statementExpired } from '../query/timeout'
import { timedOutTransaction } from '../query/transaction-timeout'
import { watchStream } from '../query/streams'
import { isTransactionClient, KnexRunnerBase, streamOfCallback, timeoutOf, type CompiledQuery, type DriverConnection, type KnexRunner } from './internals'
import { runtimeOf } from './runtime'

// knex runs every statement of a builder through a runner made by `client.runner()`, on the
// client of the builder: a transaction's builders get theirs from the transaction's client, which
// shares the plugin's prototype. So each statement passes here, inside transactions as outside:
// - unless it has a `.timeout()` of its own, it gets `queryTimeoutMillis`: on expiry the caller
//   is answered at once with FST_FORK_SAFE_DB_QUERY_TIMEOUT and the statement is cancelled on
//   the server in the background (query/cancel.ts); the deadline is kept by the pool's
//   deadline queue (query/deadlines.ts), not a timer per statement;
// - it is recorded, with the connection it runs on, as its request's (query/owners.ts); a
//   statement of a request whose client has gone is not sent;
// - a `.timeout()` of the user's expires as knex makes it, with the plugin's error;
// - inside a transaction, a statement that times out either way closes the transaction's
//   connection, and later statements on it fail at once (query/transaction-timeout.ts).
// All of it in one promise per statement; a statement with no deadline and no request goes to
// knex untouched.

/** Builders that take a `.timeout()` (query builders and raw; schema builders do not). */
function takesTimeout (builder: object): boolean {
  return typeof (builder as { timeout?: unknown }).timeout === 'function'
}

export class ForkSafeRunner extends KnexRunnerBase {
  /** A streamed statement is watched like any other (see query/streams.ts). */
  override ensureConnection (callback: (runner: KnexRunner, params?: unknown) => unknown, params?: unknown): Promise<unknown> {
    const stream = streamOfCallback(params)
    if (stream === undefined) return super.ensureConnection(callback, params)
    return super.ensureConnection((runner) => {
      const connection = runner.connection as DriverConnection
      const refused = isTransactionClient(runner.client) ? timedOutTransaction(connection) : undefined
      return watchStream(connection, ownerOf(runner.builder, runner.client), stream, async () => callback(runner, params), refused)
    }, params)
  }

  override query (query: CompiledQuery): Promise<unknown> {
    const runtime = runtimeOf(this.client)
    const owner = ownerOf(this.builder, this.client)
    const connection = this.connection
    const ownTimeout = timeoutOf(query) !== undefined
    const deadlines = ownTimeout || !takesTimeout(this.builder) ? undefined : runtime.deadlines
    const transaction = connection !== undefined && isTransactionClient(this.client) ? connection : undefined
    const failed = transaction === undefined ? undefined : timedOutTransaction(transaction)
    if (failed !== undefined) return Promise.reject(failed)
    if ((owner === undefined && deadlines === undefined) || connection === undefined) {
      return ownTimeout ? super.query(query).catch((error: unknown) => { throw classifyStatementError(asQueryTimeout(error, query, transaction), runtime.options.decorator, query.sql) }) : super.query(query)
    }
    if (owner?.clientGone === true) return Promise.reject(new FST_FORK_SAFE_DB_CLIENT_GONE())
    owner?.started(connection)
    const statement = super.query(query)
    return new Promise((resolve, reject) => {
      const deadline = deadlines?.start(() => {
        runtime.canceller.cancel(connection, TIMED_OUT)
        reject(statementExpired(query, runtime.options.queryTimeoutMillis, transaction))
      })
      const settled = () => {
        if (deadline !== undefined) deadlines?.end(deadline)
        owner?.finished(connection)
      }
      statement.then(
        (result) => { settled(); resolve(result) },
        (error: unknown) => { settled(); reject(classifyStatementError(asQueryTimeout(error, query, transaction), runtime.options.decorator, query.sql)) }
      )
    })
  }
}
