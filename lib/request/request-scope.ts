import type { FastifyRequest } from 'fastify'
import type { Knex } from 'knex'
import { clientOfTransaction } from '../driver/knex-parts'
import type { DriverConnection } from '../driver/types'
import { FST_FORK_SAFE_DB_TRANSACTION_AFTER_RESPONSE, FST_FORK_SAFE_DB_TRANSACTION_ROLLED_BACK } from '../errors'
import { RETRY_WHILE } from '../client/transaction-retry'
import { claim, type StatementOwner } from '../query/owners'
import { stopStream } from '../query/streams'
import { unwatchSocket, watchSocket, type HangUpWatch } from './hang-up-watch'
import { OVERRIDES, scopeOfKnex, type TransactionContainer } from './scoped-knex'

// `request.db` is the process's knex instance seen through a thin per-request wrapper, so the
// plugin knows which statements and transactions belong to which request:
// - a client that disconnects mid-request (its socket closes while a statement runs or a
//   transaction is open) gets its running statements cancelled (KILL QUERY) and its open
//   transactions rolled back: nobody is waiting for their result any more;
// - a transaction begun through `request.db` and still open when the response has been sent is
//   a leak: it would hold its connection (and its row locks) until the server's wait_timeout.
//   It is rolled back, its connection returns to the pool, and the leak is logged as an error
//   with the route and the request id. Only a request that begins a transaction listens for the
//   end of its response: a hook on every request (Fastify's onResponse, which also makes Fastify
//   set up its response listeners) cost every request measurably in bench:instructions.
// Once its response has finished, a request is over: what it still runs is background work of
// the handler's, and a hang-up after that cancels nothing. A transaction begun on `request.db`
// after that would have nothing left to end it (and nobody to tell its outcome to): it is refused
// with FST_FORK_SAFE_DB_TRANSACTION_AFTER_RESPONSE. A transaction the plugin rolls back (a
// hang-up, a leak) is rolled back *with* FST_FORK_SAFE_DB_TRANSACTION_ROLLED_BACK, so the
// promise of a callback-form transaction rejects with the reason instead of resolving empty.
// The wrapper is created on the first access to `request.db` only; requests that never touch
// the database pay nothing. Queries on `fastify.db` are not request-scoped.

// Its log lines go through the request's logger (they carry the request id); this names us.
const PLUGIN_NAME = 'fastify-fork-safe-db'

/** What a scope needs from the pool that owns the process's knex instance. */
export interface ScopeHost {
  /** The process's knex instance (PID-checked). */
  readonly knex: Knex
  /** Sends KILL QUERY for the statement running on `connection` (a connection of this process's pool). */
  cancel: (connection: DriverConnection, reason: string) => void
}

/** The response as the scope sees it (Fastify's `reply.raw`: http's, HTTP/2's, or inject's). */
export interface ScopeResponse {
  /** All of it handed to the operating system (undefined where the response does not say). */
  readonly writableFinished?: boolean
  once: (event: 'finish', listener: () => void) => unknown
}

/** The request's response, once the plugin's onRequest hook has recorded it. */
export type ResponseOf = (request: FastifyRequest) => ScopeResponse | undefined

export class RequestScope implements StatementOwner {
  readonly #host: ScopeHost
  readonly #request: FastifyRequest
  readonly #responseOf: ResponseOf
  readonly #knex: Knex
  /** The process's knex instance this request's view is over. */
  readonly base: Knex
  /**
   * Connections running a statement of this request now (see query/owners.ts): nearly always
   * one at a time, so one slot, and a set only for statements run side by side.
   */
  #running: DriverConnection | undefined
  #runningMore: Set<DriverConnection> | undefined
  // Created on first use: most requests never begin a transaction.
  #transactions: Set<Knex.Transaction> | undefined
  #routeTransaction: Knex.Transaction | undefined
  /** The route transaction's end, once begun: the response path and the handler's may both ask. */
  #routeTransactionEnd: Promise<void> | undefined
  /** The client went away before its response was sent. */
  clientGone = false
  /** The watch on the connection's socket, naming this scope only while something of ours is open. */
  #socket: HangUpWatch | undefined
  /** Listening for the response's end (the leak check): set once a transaction is begun. */
  #responseWatched = false

  constructor (host: ScopeHost, request: FastifyRequest, responseOf: ResponseOf) {
    this.#host = host
    this.#request = request
    this.#responseOf = responseOf
    this.base = host.knex
    // A Proxy, with the scope as its handler: callable like knex, and no per-request function
    // or prototype change (knex's own methods call back through the `get` trap).
    this.#knex = new Proxy(this.base, this as ProxyHandler<Knex>)
  }

  /** What `request.db` returns: the route's transaction if it has one, else the scoped knex. */
  get knex (): Knex {
    return this.#routeTransaction ?? this.#knex
  }

  /** Begins the transaction a `{ db: { transaction: true } }` route runs in. */
  async beginRouteTransaction (): Promise<void> {
    this.#routeTransaction = await this.#knex.transaction()
  }

  /**
   * Commits the route's transaction, or rolls it back when `commit` is false. Only the first
   * call ends it, and only the first caller hears of a failure (it answers the client with it);
   * a later call (Fastify's onSend for that error response, the handler of a hijacked reply
   * resolving after onSend, a stream's end after a hang-up) waits for that end.
   */
  endRouteTransaction (commit: boolean): Promise<void> {
    if (this.#routeTransactionEnd !== undefined) return this.#routeTransactionEnd.catch(() => {})
    this.#routeTransactionEnd = this.#endRouteTransaction(commit)
    return this.#routeTransactionEnd
  }

  async #endRouteTransaction (commit: boolean): Promise<void> {
    const trx = this.#routeTransaction
    if (trx === undefined || trx.isCompleted()) return
    if (!commit) {
      await trx.rollback()
      return
    }
    // knex's commit() resolves even when COMMIT fails; the failure rejects executionPromise.
    await trx.commit()
    await trx.executionPromise
  }

  /** Proxy trap: calling `request.db('users')`. */
  apply (target: Knex, _thisArg: unknown, args: unknown[]): unknown {
    return this.claim((target as unknown as (...args: unknown[]) => object)(...args))
  }

  /** Proxy trap: `request.db.select`, `.raw`, `.client`, …; knex's own methods call back through it. */
  get (target: Knex, property: string | symbol, receiver: unknown): unknown {
    if (property === scopeOfKnex) return this
    if (typeof property === 'string' && Object.hasOwn(OVERRIDES, property)) return OVERRIDES[property]
    return Reflect.get(target, property, receiver)
  }

  /** Records the statements `builder` runs as this request's; returns it. */
  claim<T extends object>(builder: T): T {
    claim(builder, this)
    return builder
  }

  /**
   * `knex.transaction()` on the process's instance, with the transaction recorded as this
   * request's; refused once the response has ended.
   */
  transaction (container?: TransactionContainer | Knex.TransactionConfig | null, config?: Knex.TransactionConfig): Promise<unknown> {
    if (this.#responseEnded()) return Promise.reject(this.#beganAfterResponse())
    const base = this.base
    const begin = base.transaction as (this: Knex, container?: unknown, config?: Knex.TransactionConfig) => Promise<Knex.Transaction>
    if (typeof container === 'function') {
      // Thrown inside the container, the refusal makes knex roll back and reject with it. A
      // transaction with `retries` runs again only while its client is still there.
      const retried = config?.retries === undefined ? config : { ...config, [RETRY_WHILE]: () => !this.#clientGoneOrDone() }
      return begin.call(base, (trx: Knex.Transaction) => container(this.#adopt(trx, false)), retried)
    }
    return begin.call(base, container, config).then((trx) => this.#adopt(trx, true))
  }

  /** Its BEGIN ran (it may have waited for a connection): the transaction is this request's, unless the response ended meanwhile. */
  #adopt (trx: Knex.Transaction, rollBackIfRefused: boolean): Knex.Transaction {
    if (this.#responseEnded()) {
      const error = this.#beganAfterResponse()
      // Inside a container knex rolls back on the throw; a returned transaction is ours to end.
      if (rollBackIfRefused) {
        trx.executionPromise.catch(() => {})
        trx.rollback(error).catch(() => {})
      }
      throw error
    }
    (this.#transactions ??= new Set()).add(trx)
    // Statements on the transaction are this request's too (its builders are not ours to wrap).
    claim(clientOfTransaction(trx), this)
    this.#watchSocket()
    this.#watchResponse()
    const settled = () => this.#unwatchSocketIfIdle()
    trx.executionPromise.then(settled, settled)
    return trx
  }

  /** The client hung up (its socket closed, watched or not), or its response has ended. */
  #clientGoneOrDone (): boolean {
    return this.clientGone || this.#request.raw.socket?.destroyed === true || this.#responseEnded()
  }

  #responseEnded (): boolean {
    return this.#responseOf(this.#request)?.writableFinished === true
  }

  #beganAfterResponse (): Error {
    const route = this.#route()
    const error = new FST_FORK_SAFE_DB_TRANSACTION_AFTER_RESPONSE(route ?? this.#unmatched())
    this.#request.log.warn({ plugin: PLUGIN_NAME, err: error, route, requestId: this.#request.id }, 'a transaction was begun on request.db after the response had ended; refused')
    return error
  }

  // The route's pattern, never the request's URL: the URL carries the query string (tokens,
  // e-mail addresses) into events, traces, logs and stats().holders. A request no route matched
  // (a not-found handler) has no pattern (Fastify leaves routeOptions.method and url undefined).
  #route (): string | undefined {
    const url = this.#request.routeOptions.url
    return url === undefined ? undefined : `${this.#request.method} ${url}`
  }

  /** What a message names for a request no route matched: its method only. */
  #unmatched (): string {
    return `a ${this.#request.method} request no route matched`
  }

  /** Fastify's id of this scope's request. */
  get requestId (): string {
    return this.#request.id
  }

  /** This scope's route, `GET /users/:id`; undefined when no route matched (a not-found handler). */
  get route (): string | undefined {
    return this.#route()
  }

  /** A statement of this request began on `connection`. */
  started (connection: DriverConnection): void {
    if (this.#running === undefined) this.#running = connection
    else (this.#runningMore ??= new Set()).add(connection)
    this.#watchSocket()
  }

  finished (connection: DriverConnection): void {
    if (this.#running === connection) this.#running = undefined
    else this.#runningMore?.delete(connection)
    this.#unwatchSocketIfIdle()
  }

  #runningConnections (): DriverConnection[] {
    const more = [...(this.#runningMore ?? [])]
    return this.#running === undefined ? more : [this.#running, ...more]
  }

  #watchSocket (): void {
    if (this.#socket !== undefined) return
    this.#socket = watchSocket(this.#request.raw.socket, this)
  }

  #unwatchSocketIfIdle (): void {
    if (this.#socket === undefined || this.#running !== undefined || (this.#runningMore?.size ?? 0) > 0 || this.#hasOpenTransaction()) return
    this.#unwatchSocket()
  }

  #unwatchSocket (): void {
    if (this.#socket === undefined) return
    unwatchSocket(this.#socket, this)
    this.#socket = undefined
  }

  /**
   * The plugin's onRequest hook recorded the response after this scope was made (by a hook that
   * ran before it): a transaction begun meanwhile is watched from now on.
   */
  responding (): void {
    if (this.#hasOpenTransaction()) this.#watchResponse()
  }

  #watchResponse (): void {
    if (this.#responseWatched) return
    const response = this.#responseOf(this.#request)
    // Not recorded yet: responding() comes. Finished: the transaction is background work.
    if (response === undefined || response.writableFinished === true) return
    this.#responseWatched = true
    response.once('finish', () => this.responseSent())
  }

  /** The socket closed while a statement ran or a transaction was open. */
  hungUp (): void {
    this.#socket = undefined
    if (this.#responseEnded()) return
    this.#abandon()
  }

  /** The client went away before its response was sent. */
  #abandon (): void {
    this.clientGone = true
    const running = this.#runningConnections()
    for (const connection of running) {
      this.#host.cancel(connection, 'the client went away')
      stopStream(connection, new Error('the client went away'))
    }
    const cancelled = running.length
    const open = this.#openTransactions()
    if (cancelled > 0 || open.length > 0) {
      this.#request.log.info({ plugin: PLUGIN_NAME, cancelledQueries: cancelled, rolledBackTransactions: open.length }, 'client disconnected mid-request: cancelled its running queries')
    }
    for (const trx of open) this.#rollBack(trx, 'the client went away before the response was sent')
  }

  /** The response has been sent (its 'finish'): what is still open has leaked. */
  responseSent (): void {
    this.#unwatchSocket()
    this.#rollBackLeaks()
  }

  // The route's own transaction is not a leak: the route's hooks end it (for a hijacked reply,
  // when the handler resolves, which may be after the response has finished).
  #rollBackLeaks (): void {
    const open = this.#openTransactions().filter((trx) => trx !== this.#routeTransaction)
    if (open.length === 0) return
    this.#request.log.error(
      { plugin: PLUGIN_NAME, route: this.#route(), requestId: this.#request.id, transactions: open.length },
      'a transaction begun through request.db was neither committed nor rolled back when the response ended; rolling it back'
    )
    for (const trx of open) this.#rollBack(trx, 'the response ended while it was still open (await transactions before replying)')
  }

  #hasOpenTransaction (): boolean {
    if (this.#transactions === undefined) return false
    for (const trx of this.#transactions) if (!trx.isCompleted()) return true
    return false
  }

  #openTransactions (): Knex.Transaction[] {
    return this.#transactions === undefined ? [] : [...this.#transactions].filter((trx) => !trx.isCompleted())
  }

  #rollBack (trx: Knex.Transaction, why: string): void {
    if (trx === this.#routeTransaction) {
      this.endRouteTransaction(false).catch((error: unknown) => this.#rollBackFailed(error))
      return
    }
    // With the reason, the promise of a callback-form transaction rejects with it.
    trx.rollback(new FST_FORK_SAFE_DB_TRANSACTION_ROLLED_BACK(why)).catch((error: unknown) => this.#rollBackFailed(error))
  }

  #rollBackFailed (error: unknown): void {
    this.#request.log.warn({ plugin: PLUGIN_NAME, err: error }, 'rolling back an abandoned transaction failed')
  }
}
