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

interface Driver {
  createConnection: (settings: unknown) => DriverConnection & { once: (event: string, listener: () => void) => unknown }
}

/**
 * Records the connections the client is still opening. knex creates them on the shared mysql2
 * module; the client gets its own object instead, so a deadline can reach a connect that is
 * stuck (into a black hole it would hold knex.destroy() for mysql2's whole connect timeout).
 */
export function trackConnects (client: Knex.Client): Set<DriverConnection> {
  const connecting = new Set<DriverConnection>()
  const driver = client.driver as Driver
  client.driver = Object.assign(Object.create(driver) as Driver, {
    createConnection (settings: unknown) {
      const connection = driver.createConnection(settings)
      connecting.add(connection)
      const settled = () => connecting.delete(connection)
      connection.once('connect', settled)
      connection.once('error', settled)
      connection.once('end', settled)
      return connection
    }
  })
  return connecting
}

/** From now on the pool opens no new connection: each attempt fails with `makeError()`. */
export function refuseNewConnections (client: Knex.Client, makeError: () => Error): void {
  client.acquireRawConnection = () => Promise.reject(makeError())
}

/** Fails every pending query with `makeError()`, closes every socket, and skips the COM_QUIT wait. */
export function tearDownConnections (client: Knex.Client, connecting: Set<DriverConnection>, makeError: () => Error): void {
  const pool = client.pool as unknown as TarnPool | undefined
  const connections = [...(pool?.used ?? []).map((used) => used.resource), ...(pool?.free ?? []).map((free) => free.resource), ...connecting]
  // One error per connection: knex rewrites the message of each query error it sees.
  for (const connection of connections) connection.stream?.destroy(makeError())
  // A graceful end() would wait for the server to acknowledge COM_QUIT; it is not answering.
  client.destroyRawConnection = async (connection: DriverConnection) => { connection.destroy?.() }
}
