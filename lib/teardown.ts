import type { Knex } from 'knex'

// The last resort of a shutdown whose database stopped answering. knex.destroy() waits for every
// in-use connection to come back, forever if its query never returns, and mysql2's own
// destroy() closes the socket without settling the pending query. Destroying the socket *with
// an error* makes mysql2 fail the pending command with that error, so the query rejects, the
// request answers, the connection returns to the pool and destroy() can finish.

interface DriverConnection {
  stream?: { destroy: (error?: Error) => void }
  destroy?: () => void
}

interface TarnPool {
  used: Array<{ resource: DriverConnection }>
  free: Array<{ resource: DriverConnection }>
}

/** From now on the pool opens no new connection: each attempt fails with `makeError()`. */
export function refuseNewConnections (client: Knex.Client, makeError: () => Error): void {
  client.acquireRawConnection = () => Promise.reject(makeError())
}

/** Fails every pending query with `makeError()`, closes every socket, and skips the COM_QUIT wait. */
export function tearDownConnections (client: Knex.Client, makeError: () => Error): void {
  const pool = client.pool as unknown as TarnPool | undefined
  // One error per connection: knex rewrites the message of each query error it sees.
  for (const { resource } of [...(pool?.used ?? []), ...(pool?.free ?? [])]) resource.stream?.destroy(makeError())
  // A graceful end() would wait for the server to acknowledge COM_QUIT; it is not answering.
  client.destroyRawConnection = async (connection: DriverConnection) => { connection.destroy?.() }
}
