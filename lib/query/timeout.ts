import type { Knex } from 'knex'
import type { KillableConnection, QueryCanceller } from './cancel'

// A slow query must never stall other requests. Every query without a `.timeout()` of its own
// gets `queryTimeoutMillis`, with `cancel: true`: on expiry knex sends KILL QUERY on a separate
// connection, so the statement stops on the server too (without cancel it would run on and keep
// its connection). knex waits for that cancel before answering the caller; ours answers at once
// (see cancel.ts), so a timeout reaches the caller on time even when the server is silent.

interface TimedBuilder {
  _timeout?: number
  timeout?: (ms: number, options: { cancel: boolean }) => unknown
  once: (event: 'query-error', listener: (error: unknown, query: never) => void) => unknown
}

/**
 * `onTimeoutError` sees a timed-out query's error before its caller does: knex reports a
 * `.timeout()` expiry on the query's own builder only, not on the client.
 */
export function applyQueryTimeouts (
  client: Knex.Client, queryTimeoutMillis: number, canceller: QueryCanceller,
  onTimeoutError: (error: unknown, query: never) => void
): void {
  // One listener per query does both: give it the default timeout, then watch for its expiry.
  client.on('start', (builder: TimedBuilder) => {
    if (queryTimeoutMillis > 0 && builder._timeout === undefined && typeof builder.timeout === 'function') {
      builder.timeout(queryTimeoutMillis, { cancel: true })
    }
    if (builder._timeout !== undefined) builder.once('query-error', onTimeoutError)
  })
  const dialect = client as unknown as { cancelQuery: (connection: KillableConnection) => Promise<void> }
  dialect.cancelQuery = async (connection) => canceller.cancel(connection, 'its query timed out')
}
