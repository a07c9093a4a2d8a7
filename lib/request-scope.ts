import type { FastifyRequest } from 'fastify'
import type { Knex } from 'knex'

// `request.db` is the process's knex instance seen through a thin per-request wrapper, so the
// plugin knows which statements and transactions belong to which request:
// - a client that disconnects mid-request gets its running statements cancelled (KILL QUERY),
//   and its open transactions rolled back: nobody is waiting for their result any more;
// - a transaction begun through `request.db` and still open when the response has been sent is
//   a leak: it would hold its connection (and its row locks) until the server's wait_timeout.
//   It is rolled back, its connection returns to the pool, and the leak is logged as an error
//   with the route and the request id.
// The wrapper is created on the first access to `request.db` only; requests that never touch
// the database pay nothing. Queries on `fastify.db` are not request-scoped.

/** What a scope needs from the pool that owns the process's knex instance. */
export interface ScopeHost {
  /** The process's knex instance (PID-checked). */
  readonly knex: Knex
  /** Sends KILL QUERY for the statement on the borrowed connection `knexUid`; false if none. */
  cancelQueryOn: (knexUid: string, reason: string) => boolean
}

interface QueryEvent {
  __knexUid?: string
  __knexQueryUid?: string
}

interface EventSource {
  on: (event: string, listener: (...args: never[]) => void) => unknown
}

type TransactionContainer = (trx: Knex.Transaction) => unknown

const scopeOfKnex = Symbol('fastify-fork-safe-db:request-scope')
const prototypes = new WeakMap<Knex, object>()

/** The methods a request's knex overrides, on top of the process's knex instance `base`. */
function scopedPrototype (base: Knex): object {
  let prototype = prototypes.get(base)
  if (prototype !== undefined) return prototype
  type Scoped = Record<symbol, RequestScope>
  const method = (value: (this: Scoped, ...args: never[]) => unknown): PropertyDescriptor => ({ value, configurable: true })
  prototype = Object.create(base, {
    queryBuilder: method(function () { return this[scopeOfKnex].watch(base.queryBuilder()) }),
    raw: method(function (...args: unknown[]) { return this[scopeOfKnex].watch((base.raw as (...args: unknown[]) => object)(...args)) }),
    transaction: method(function (container?: TransactionContainer | Knex.TransactionConfig | null, config?: Knex.TransactionConfig) {
      return this[scopeOfKnex].transaction(base, container, config)
    }),
    transactionProvider: method(function (config?: Knex.TransactionConfig) {
      let trx: Promise<unknown> | undefined
      return () => (trx ??= this[scopeOfKnex].transaction(base, config))
    })
  }) as object
  prototypes.set(base, prototype)
  return prototype
}

export class RequestScope {
  readonly #host: ScopeHost
  readonly #request: FastifyRequest
  readonly #knex: Knex
  /** Statements running for this request: query uid -> uid of the connection they run on. */
  readonly #running = new Map<string, string>()
  readonly #transactions = new Set<Knex.Transaction>()
  #routeTransaction: Knex.Transaction | undefined
  #clientGone = false

  constructor (host: ScopeHost, request: FastifyRequest) {
    this.#host = host
    this.#request = request
    this.#knex = this.#wrap(host.knex)
  }

  /** What `request.db` returns: the route's transaction if it has one, else the scoped knex. */
  get knex (): Knex {
    return this.#routeTransaction ?? this.#knex
  }

  /** Begins the transaction a `{ db: { transaction: true } }` route runs in. */
  async beginRouteTransaction (): Promise<void> {
    this.#routeTransaction = await this.#knex.transaction()
  }

  /** Commits the route's transaction, or rolls it back when `commit` is false. */
  async endRouteTransaction (commit: boolean): Promise<void> {
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

  #wrap (base: Knex): Knex {
    // A function, because knex instances are called (`request.db('users')`). Its prototype
    // holds what differs from the real instance and resolves everything else (schema, fn, ref,
    // select, where, …) on it; knex's shortcuts (`request.db.select()`) build through our
    // `queryBuilder`. The prototype is made once per knex instance, not per request.
    const callBase = base as unknown as (...args: unknown[]) => object
    const scoped = Object.setPrototypeOf((...args: unknown[]) => this.watch(callBase(...args)), scopedPrototype(base)) as Record<symbol, RequestScope>
    scoped[scopeOfKnex] = this
    return scoped as unknown as Knex
  }

  /** `knex.transaction()` on `base`, with the transaction recorded as this request's. */
  transaction (base: Knex, container?: TransactionContainer | Knex.TransactionConfig | null, config?: Knex.TransactionConfig): Promise<unknown> {
    const begin = base.transaction as (this: Knex, container?: unknown, config?: Knex.TransactionConfig) => Promise<Knex.Transaction>
    if (typeof container === 'function') {
      return begin.call(base, (trx: Knex.Transaction) => container(this.#adopt(trx)), config)
    }
    return begin.call(base, container, config).then((trx) => this.#adopt(trx))
  }

  /** Records the statements `builder` runs as this request's; returns it. */
  watch<T extends object>(builder: T): T {
    // Shared listeners, no closure per query; knex emits them on the builder (or transaction).
    const source = builder as unknown as EventSource
    source.on('query', this.#onQuery)
    source.on('query-response', this.#onQueryResponse)
    source.on('query-error', this.#onQueryError)
    return builder
  }

  #adopt (trx: Knex.Transaction): Knex.Transaction {
    this.#transactions.add(trx)
    // Statements on the transaction are this request's too (its builders are not ours to wrap).
    this.watch(trx)
    return trx
  }

  readonly #onQuery = (query: QueryEvent): void => {
    const { __knexQueryUid: queryUid, __knexUid: connectionUid } = query
    if (queryUid === undefined || connectionUid === undefined) return
    this.#running.set(queryUid, connectionUid)
    if (this.#clientGone) this.#host.cancelQueryOn(connectionUid, 'the client went away')
  }

  readonly #onQueryResponse = (_response: unknown, query: QueryEvent): void => {
    if (query.__knexQueryUid !== undefined) this.#running.delete(query.__knexQueryUid)
  }

  readonly #onQueryError = (_error: unknown, query: QueryEvent): void => {
    if (query.__knexQueryUid !== undefined) this.#running.delete(query.__knexQueryUid)
  }

  /** The client went away before its response was sent (Fastify's onRequestAbort). */
  clientGone (): void {
    this.#clientGone = true
    let cancelled = 0
    for (const connectionUid of new Set(this.#running.values())) {
      if (this.#host.cancelQueryOn(connectionUid, 'the client went away')) cancelled += 1
    }
    const open = this.#openTransactions()
    if (cancelled > 0 || open.length > 0) {
      this.#request.log.info({ plugin: 'fastify-fork-safe-db', cancelledQueries: cancelled, rolledBackTransactions: open.length }, 'client disconnected mid-request: cancelled its running queries')
    }
    for (const trx of open) this.#rollBack(trx)
  }

  /** The response has been sent (Fastify's onResponse): what is still open has leaked. */
  responseSent (): void {
    this.#rollBackLeaks()
  }

  #rollBackLeaks (): void {
    const open = this.#openTransactions()
    if (open.length === 0) return
    const { method, url } = this.#request.routeOptions
    this.#request.log.error(
      { plugin: 'fastify-fork-safe-db', route: `${method.toString()} ${url ?? this.#request.url}`, requestId: this.#request.id, transactions: open.length },
      'a transaction begun through request.db was neither committed nor rolled back when the response ended; rolling it back'
    )
    for (const trx of open) this.#rollBack(trx)
  }

  #openTransactions (): Knex.Transaction[] {
    return [...this.#transactions].filter((trx) => !trx.isCompleted())
  }

  #rollBack (trx: Knex.Transaction): void {
    trx.rollback().catch((error: unknown) => {
      this.#request.log.warn({ plugin: 'fastify-fork-safe-db', err: error }, 'rolling back an abandoned transaction failed')
    })
  }
}
