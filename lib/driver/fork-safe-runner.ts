import { FST_FORK_SAFE_DB_CLIENT_GONE } from '../errors'
import { ownerOf } from '../query/owners'
import { asQueryTimeout } from '../query/timeout'
import { applyDefaultTimeout, KnexRunnerBase, type CompiledQuery } from './internals'
import { runtimeOf } from './runtime'

// knex runs every statement of a builder through a runner made by `client.runner()`, on the
// client of the builder: a transaction's builders get theirs from the transaction's client, which
// shares the plugin's prototype. So each statement passes here, inside transactions as outside:
// - it gets the default query timeout unless it has its own (see query/timeout.ts);
// - it is recorded, with the connection it runs on, as its request's (see query/owners.ts);
//   a statement of a request whose client has gone is not sent;
// - an expiry reaches the caller as FST_FORK_SAFE_DB_QUERY_TIMEOUT.

/** Builders that take a `.timeout()` (query builders and raw; schema builders do not). */
function takesTimeout (builder: object): boolean {
  return typeof (builder as { timeout?: unknown }).timeout === 'function'
}

export class ForkSafeRunner extends KnexRunnerBase {
  override query (query: CompiledQuery): Promise<unknown> {
    const { queryTimeoutMillis } = runtimeOf(this.client).options
    if (queryTimeoutMillis > 0 && takesTimeout(this.builder)) applyDefaultTimeout(query, queryTimeoutMillis)
    const owner = ownerOf(this.builder, this.client)
    const connection = this.connection
    if (owner === undefined || connection === undefined) {
      return super.query(query).catch((error: unknown) => { throw asQueryTimeout(error, query) })
    }
    if (owner.clientGone) return Promise.reject(new FST_FORK_SAFE_DB_CLIENT_GONE())
    owner.started(connection)
    return super.query(query).then(
      (result) => { owner.finished(connection); return result },
      (error: unknown) => { owner.finished(connection); throw asQueryTimeout(error, query) }
    )
  }
}
