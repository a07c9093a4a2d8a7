import { performance } from 'node:perf_hooks'
import { isStatementTimeout, isTransactionClient, KnexRunnerBase, streamOfCallback, takesTimeout, timeoutOf } from '../driver/knex-parts'
import type { CompiledQuery, DriverConnection, KnexRunner } from '../driver/types'
import { FST_FORK_SAFE_DB_CLIENT_GONE } from '../errors'
import { codeOf, errorNumberOf, queryEnd, queryStart, queryTimeout, type QueryStartEvent } from '../events/channels'
import { queryTrace, traced } from '../events/tracing'
import { refusedAnswer } from '../hosts/refused-answer'
import { TIMED_OUT } from '../query/cancel'
import { classifyStatementError } from '../query/classify-error'
import { ownerOf } from '../query/owners'
import { watchStream } from '../query/streams'
import { asQueryTimeout, statementExpired } from '../query/timeout'
import { timedOutTransaction } from '../query/transaction-timeout'
import { runtimeOf, type ClientRuntime } from './runtime'

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
//   connection, and later statements on it fail at once (query/transaction-timeout.ts);
// - while anyone subscribes, it is published on `query:start`, `query:end` and `query:timeout`,
//   and traced on the `query` tracing channel (events/tracing.ts).
// All of it in one promise per statement; a statement with no deadline, no request and no
// subscriber goes to knex with only a `.catch` for a server's refusal (hosts/refused-answer.ts).

let queryIds = 0

export class ForkSafeRunner extends KnexRunnerBase {
  /** A streamed statement is watched like any other (see query/streams.ts). */
  override ensureConnection (callback: (runner: KnexRunner, params?: unknown) => unknown, params?: unknown): Promise<unknown> {
    const stream = streamOfCallback(params)
    if (stream === undefined) return super.ensureConnection(callback, params)
    return super.ensureConnection((runner) => {
      const connection = runner.connection as DriverConnection
      const refused = isTransactionClient(runner.client) ? timedOutTransaction(connection) : undefined
      // A refusal (read-only, not ready) retires the connection here too; the stream itself has
      // already emitted the server's error.
      const run = async () => {
        try {
          return await callback(runner, params)
        } catch (error) {
          return await (this.#refused(runtimeOf(this.client), error) ?? Promise.reject(error))
        }
      }
      return watchStream(connection, ownerOf(runner.builder, runner.client), stream, run, refused)
    }, params)
  }

  override query (query: CompiledQuery): Promise<unknown> {
    if (!queryStart.hasSubscribers && !queryEnd.hasSubscribers && !queryTimeout.hasSubscribers && !queryTrace.hasSubscribers) return this.#run(query, undefined)
    return this.#published(query)
  }

  #published (query: CompiledQuery): Promise<unknown> {
    const runtime = runtimeOf(this.client)
    const connection = this.connection
    const owner = ownerOf(this.builder, this.client)
    const start: QueryStartEvent = {
      pool: runtime.identity,
      queryId: ++queryIds,
      connectionId: connection?.threadId ?? null,
      host: connection === undefined ? '' : runtime.hostLabelOf(connection),
      sql: query.sql,
      method: query.method,
      inTransaction: isTransactionClient(this.client),
      requestId: owner?.requestId,
      route: owner?.route
    }
    if (queryStart.hasSubscribers) queryStart.publish(start)
    const started = performance.now()
    const ended = (failed: boolean, error: unknown) => {
      if (!queryEnd.hasSubscribers) return
      const durationMillis = performance.now() - started
      if (!failed) {
        queryEnd.publish({ ...start, durationMillis, failed })
        return
      }
      const errorCode = codeOf(error)
      const errorNumber = errorNumberOf(error)
      queryEnd.publish({ ...start, durationMillis, failed, ...(errorCode === undefined ? {} : { errorCode }), ...(errorNumber === undefined ? {} : { errorNumber }) })
    }
    const queryId = start.queryId
    const run = () => this.#run(query, queryId)
    const statement = queryTrace.hasSubscribers
      ? traced(queryTrace, { ...start }, run, (context, _rows, millis) => { context.durationMillis = millis })
      : run()
    return statement.then(
      (result) => { ended(false, undefined); return result },
      (error: unknown) => { ended(true, error); throw error }
    )
  }

  #run (query: CompiledQuery, queryId: number | undefined): Promise<unknown> {
    const runtime = runtimeOf(this.client)
    const owner = ownerOf(this.builder, this.client)
    const connection = this.connection
    const ownTimeout = timeoutOf(query) !== undefined
    const deadlines = ownTimeout || !takesTimeout(this.builder) ? undefined : runtime.deadlines
    const transaction = connection !== undefined && isTransactionClient(this.client) ? connection : undefined
    const failed = transaction === undefined ? undefined : timedOutTransaction(transaction)
    if (failed !== undefined) return Promise.reject(failed)
    if ((owner === undefined && deadlines === undefined) || connection === undefined) {
      // No deadline and no request (queryTimeoutMillis: 0, fastify.db outside a request, a schema
      // builder): a server's refusal still retires its connection; other errors pass as knex gives them.
      return ownTimeout
        ? super.query(query).catch((error: unknown) => this.#refused(runtime, error) ?? Promise.reject(this.#failure(runtime, error, query, transaction, queryId)))
        : super.query(query).catch((error: unknown) => this.#refused(runtime, error) ?? Promise.reject(error))
    }
    if (owner?.clientGone === true) return Promise.reject(new FST_FORK_SAFE_DB_CLIENT_GONE())
    owner?.started(connection)
    const statement = super.query(query)
    return new Promise((resolve, reject) => {
      const deadline = deadlines?.start(() => {
        timedOut(runtime, queryId, connection, runtime.options.queryTimeoutMillis, transaction !== undefined)
        runtime.canceller.cancel(connection, TIMED_OUT)
        reject(statementExpired(query, runtime.options.queryTimeoutMillis, transaction))
      })
      const settled = () => {
        if (deadline !== undefined) deadlines?.end(deadline)
        owner?.finished(connection)
      }
      statement.then(
        (result) => { settled(); resolve(result) },
        (error: unknown) => {
          settled()
          const refused = this.#refused(runtime, error)
          if (refused === undefined) reject(this.#failure(runtime, error, query, transaction, queryId))
          else refused.catch(reject)
        }
      )
    })
  }

  /**
   * A server's read-only or not-ready answer: rejects with the coded error once its connection
   * is retired (hosts/refused-answer.ts, which may ask the server first). undefined for any
   * other error.
   */
  #refused (runtime: ClientRuntime, error: unknown): Promise<never> | undefined {
    const connection = this.connection
    return connection === undefined ? undefined : refusedAnswer(runtime, connection, error)?.then((answer) => { throw answer })
  }

  /** A statement's error, classified; a `.timeout()` of the user's that expired is published. */
  #failure (runtime: ClientRuntime, error: unknown, query: CompiledQuery, transaction: DriverConnection | undefined, queryId: number | undefined): unknown {
    const ownTimeout = timeoutOf(query)
    if (ownTimeout !== undefined && isStatementTimeout(error, ownTimeout)) timedOut(runtime, queryId, this.connection, ownTimeout, transaction !== undefined)
    return classifyStatementError(asQueryTimeout(error, query, transaction), runtime.options.decorator, query.sql)
  }
}

function timedOut (runtime: ClientRuntime, queryId: number | undefined, connection: DriverConnection | undefined, timeoutMillis: number, inTransaction: boolean): void {
  if (queryTimeout.hasSubscribers) {
    queryTimeout.publish({ pool: runtime.identity, queryId, connectionId: connection?.threadId ?? null, timeoutMillis, inTransaction })
  }
}
