// A connection sitting idle in the pool can die without the client noticing: the server's
// `wait_timeout`, a `KILL`, a restart. knex's own validation reads only in-memory flags, which
// are stale until the event loop has processed the close. So a connection that has been idle
// long enough to be suspect is pinged before a handler gets it (~0.15 ms on loopback), like
// HikariCP's alive-bypass window: recently used connections skip the ping.

/** The part of a mysql2 connection the check needs. */
interface Pingable {
  ping: (callback: (error: Error | null) => void) => void
}

/** Resolves when the server answers a COM_PING; rejects on error or after `timeoutMillis`. */
export function ping (connection: Pingable, timeoutMillis: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ping timed out after ${timeoutMillis} ms`)), timeoutMillis)
    connection.ping((error) => {
      clearTimeout(timer)
      if (error) reject(error)
      else resolve()
    })
  })
}

export interface BorrowCheck {
  /** Call when a connection is created or returned to the pool. */
  markIdle: (connection: object) => void
  /** tarn `validate`: true when the connection may be handed out. */
  validate: (connection: Pingable) => Promise<boolean>
}

export function createBorrowCheck (pingAfterIdleMillis: number, pingTimeoutMillis: number): BorrowCheck {
  const idleSince = new WeakMap<object, number>()
  return {
    markIdle (connection) {
      idleSince.set(connection, performance.now())
    },
    async validate (connection) {
      const since = idleSince.get(connection)
      if (since !== undefined && performance.now() - since < pingAfterIdleMillis) return true
      try {
        await ping(connection, pingTimeoutMillis)
        return true
      } catch {
        // tarn destroys the connection and opens another within the same acquire deadline.
        return false
      }
    }
  }
}
