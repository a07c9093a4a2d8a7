import { socketOf } from './mysql2-parts'
import type { DriverConnection } from './types'

// Closing a connection's socket *with an error* is how the plugin ends a connection that failed
// a check, timed out, or outlived a shutdown: mysql2 then fails the pending command with that
// error (its caller answers at once) instead of leaving it waiting. When no command is pending
// mysql2 emits the error on the connection instead, and knex removes a connection's listeners
// once it has closed it, so a late discard (a KILL that gave up) would throw an unhandled
// 'error'. A listener is put in place first.

const ignore = (): void => {}

/** Closes the connection's socket with `reason`; mysql2 fails its pending command with it. */
export function discard (connection: DriverConnection, reason: Error): void {
  const socket = socketOf(connection)
  if (socket === undefined) return
  if (connection.listenerCount('error') === 0) connection.once('error', ignore)
  socket.destroy(reason)
}
