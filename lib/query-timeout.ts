import type { FastifyBaseLogger } from 'fastify'
import type { Knex } from 'knex'

// A slow query must never stall other requests. Every query without a `.timeout()` of its own
// gets `queryTimeoutMillis`, with `cancel: true`: on expiry knex sends KILL QUERY on a separate
// connection, so the statement stops on the server too (without cancel it would run on and keep
// its connection). knex waits for that KILL before answering the caller; against a server that
// has stopped answering that wait would last a whole connect timeout. So the caller is answered
// at once: the KILL goes on in the background (bounded, and logged if it fails), and the timed
// out connection is marked disposed, so the pool never hands it out again while its statement
// may still be running.

interface TimedBuilder {
  _timeout?: number
  timeout?: (ms: number, options: { cancel: boolean }) => unknown
  once: (event: 'query-error', listener: (error: unknown, query: never) => void) => unknown
}

interface KillableConnection {
  stream?: { destroy: (error?: Error) => void }
  __knex__disposed?: unknown
}

/**
 * `onTimeoutError` sees a timed-out query's error before its caller does: knex reports a
 * `.timeout()` expiry on the query's own builder only, not on the client.
 */
export function applyQueryTimeouts (
  client: Knex.Client, queryTimeoutMillis: number, cancelTimeoutMillis: number, log: FastifyBaseLogger,
  onTimeoutError: (error: unknown, query: never) => void
): void {
  // One listener per query does both: give it the default timeout, then watch for its expiry.
  client.on('start', (builder: TimedBuilder) => {
    if (queryTimeoutMillis > 0 && builder._timeout === undefined && typeof builder.timeout === 'function') {
      builder.timeout(queryTimeoutMillis, { cancel: true })
    }
    if (builder._timeout !== undefined) builder.once('query-error', onTimeoutError)
  })
  // knex's typings declare cancelQuery without its argument; the dialects take the connection.
  const dialect = client as unknown as { cancelQuery: (connection: KillableConnection) => Promise<unknown> }
  const cancel = dialect.cancelQuery.bind(client)
  dialect.cancelQuery = async (connection) => {
    connection.__knex__disposed = new Error('its query timed out')
    const timer = setTimeout(() => {
      log.warn({ cancelTimeoutMillis }, 'KILL QUERY did not complete in time; closing the timed-out connection')
      connection.stream?.destroy(new Error('KILL QUERY did not complete in time'))
    }, cancelTimeoutMillis)
    cancel(connection).then(
      () => clearTimeout(timer),
      (error: unknown) => {
        clearTimeout(timer)
        log.warn({ err: error }, 'KILL QUERY failed; closing the timed-out connection')
        connection.stream?.destroy(error as Error)
      }
    )
  }
}
