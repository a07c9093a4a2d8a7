import type { Knex } from 'knex'

// What a request's knex does differently from the process's instance: everything that creates
// builders or transactions. The request's knex is a Proxy over the process's (see
// request-scope.ts), and these functions, shared by every request, are what its `get` trap
// answers for those names; `this` is the request's proxy, which answers `scopeOfKnex` with its scope.

export type TransactionContainer = (trx: Knex.Transaction) => unknown

/** What the overrides need of a request's scope. */
export interface ScopedKnexHost {
  readonly base: Knex
  claim: <T extends object>(builder: T) => T
  transaction: (container?: TransactionContainer | Knex.TransactionConfig | null, config?: Knex.TransactionConfig) => Promise<unknown>
}

export const scopeOfKnex = Symbol('fastify-fork-safe-db:request-scope')
type Scoped = Record<symbol, ScopedKnexHost>

/**
 * What a request's knex does differently from the process's instance: everything that creates
 * builders or transactions. Shared by every request; `this` is the request's proxy, whose
 * `get` trap answers `scopeOfKnex` with its scope.
 */
export const OVERRIDES: Record<string, (this: Scoped, ...args: never[]) => unknown> = {
  queryBuilder () {
    const scope = this[scopeOfKnex]
    return scope.claim(scope.base.queryBuilder())
  },
  raw (...args: unknown[]) {
    const scope = this[scopeOfKnex]
    return scope.claim((scope.base.raw as (...args: unknown[]) => object).apply(scope.base, args))
  },
  transaction (container?: TransactionContainer | Knex.TransactionConfig | null, config?: Knex.TransactionConfig) {
    return this[scopeOfKnex].transaction(container, config)
  },
  transactionProvider (config?: Knex.TransactionConfig) {
    let trx: Promise<unknown> | undefined
    return () => (trx ??= this[scopeOfKnex].transaction(config))
  }
}
