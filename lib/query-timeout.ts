import type { Knex } from 'knex'

// A slow query must never stall other requests. Every query without a `.timeout()` of its own
// gets `queryTimeoutMillis`, with `cancel: true`: on expiry knex sends KILL QUERY on a separate
// connection, so the statement stops on the server too (without cancel it would run on and keep
// its connection). knex waits for that KILL before answering the caller; against a server that
// has stopped answering it would wait for a whole connect timeout, so the cancel is bounded, and
// a connection whose statement could not be killed is closed instead of ever being reused.

interface TimedBuilder {
  _timeout?: number
  timeout?: (ms: number, options: { cancel: boolean }) => unknown
}

interface KillableConnection {
  stream?: { destroy: (error?: Error) => void }
}

export function applyQueryTimeouts (client: Knex.Client, queryTimeoutMillis: number, cancelTimeoutMillis: number): void {
  if (queryTimeoutMillis > 0) {
    client.on('start', (builder: TimedBuilder) => {
      if (builder._timeout === undefined && typeof builder.timeout === 'function') builder.timeout(queryTimeoutMillis, { cancel: true })
    })
  }
  // knex's typings declare cancelQuery without its argument; the dialects take the connection.
  const dialect = client as unknown as { cancelQuery: (connection: KillableConnection) => Promise<unknown> }
  const cancel = dialect.cancelQuery.bind(client)
  dialect.cancelQuery = (connection) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const error = new Error(`KILL QUERY did not complete within ${cancelTimeoutMillis} ms`)
      connection.stream?.destroy(error)
      reject(error)
    }, cancelTimeoutMillis)
    cancel(connection).then(resolve, reject).finally(() => clearTimeout(timer))
  })
}
