import { markDisposed } from '../driver/knex-parts'
import type { DialectClient, DriverConnection } from '../driver/types'
import { hideProperties } from '../logging/redact'
import { SECRET_KEYS } from '../options/connection'

// The lag guard's connection to a host, outside the pool and its breaker: a check must reach a
// host the pool refuses to connect to (a lagging one), and the pool must not count it. It uses
// the settings knex holds now (a connection function's latest result). With several hosts, the
// host set's own connect path (`openHostConnection(index)`) takes this one's place.

export function openLagMonitorConnection (client: DialectClient): Promise<DriverConnection> {
  const connection = client.driver.createConnection(client.connectionSettings)
  // An error after connecting (the server went away) must not crash the process: the next
  // check fails on the closed connection and reopens it.
  connection.on('error', (error: unknown) => markDisposed(connection, error))
  return new Promise((resolve, reject) => {
    connection.connect((error) => {
      if (error !== null) {
        connection.destroy()
        reject(error)
        return
      }
      hideProperties(connection.config, SECRET_KEYS)
      resolve(connection)
    })
  })
}
