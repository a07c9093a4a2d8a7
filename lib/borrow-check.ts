// A connection sitting idle in the pool can die without the client noticing: the server's
// `wait_timeout`, a `KILL`, a restart, a NAT that drops idle flows. knex's own validation reads
// only in-memory flags, which stay stale until the event loop has processed the socket's close
// (a FIN can sit unread while a burst of requests borrows connections, or after a stall). So:
//
// - on every borrow (from `checkAfterIdleMillis`, default 0): a socket check with no round
//   trip: let the event loop finish the poll phase it is in, so a FIN or RST that has already
//   arrived is processed, then read the flags. This catches KILL, wait_timeout and restarts,
//   which all close the socket. HikariCP skips its check for connections used in the last
//   500 ms; with that window a burst right after a KILL was handed a dead connection.
// - from `pingAfterIdleMillis` (30 s): a COM_PING round trip, which also catches peers that
//   vanished silently. A ping costs one network round trip on the request's path: at 15 ms each
//   way that doubled the latency of requests that found a connection idle for over 500 ms, so
//   it is kept for connections idle long enough to have been silently dropped.

/** The part of a mysql2 connection the check needs. */
interface Pingable {
  ping: (callback: (error: Error | null) => void) => void
  stream?: { destroy: (error?: Error) => void }
}

/**
 * Closes the socket of a connection that failed a check. Without this, the pool's graceful
 * end() would queue COM_QUIT behind the unanswered ping and leave the socket open; with an
 * error, mysql2 also settles whatever command was pending.
 */
export function discard (connection: Pingable, reason: Error): void {
  connection.stream?.destroy(reason)
}

/** Resolves when the server answers a COM_PING; rejects on error or after `timeoutMillis`. */
export function ping (connection: Pingable, timeoutMillis: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(Object.assign(new Error(`ping timed out after ${timeoutMillis} ms`), { code: 'PING_TIMEOUT' })), timeoutMillis)
    connection.ping((error) => {
      clearTimeout(timer)
      if (error) reject(error)
      else resolve()
    })
  })
}

// setImmediate runs once the current poll phase is done: every socket event that epoll had
// reported with the one we are handling (a KILL's reply arrives after the victim's FIN) has
// been processed by then.
function socketEventsProcessed (): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

export interface BorrowCheckOptions {
  checkAfterIdleMillis: number
  pingAfterIdleMillis: number
  pingTimeoutMillis: number
  /** The driver's in-memory liveness test (knex's, which runs after ours anyway). */
  looksAlive: (connection: Pingable) => boolean
}

export interface BorrowCheck {
  /** Call when a connection is created or returned to the pool. */
  markIdle: (connection: object) => void
  /** tarn `validate`: true when the connection may be handed out. */
  validate: (connection: Pingable) => Promise<boolean>
}

export function createBorrowCheck (options: BorrowCheckOptions): BorrowCheck {
  const idleSince = new WeakMap<object, number>()
  return {
    markIdle (connection) {
      idleSince.set(connection, performance.now())
    },
    async validate (connection) {
      const since = idleSince.get(connection)
      const idle = since === undefined ? Number.POSITIVE_INFINITY : performance.now() - since
      if (idle >= options.pingAfterIdleMillis) {
        try {
          await ping(connection, options.pingTimeoutMillis)
          return true
        } catch (error) {
          // tarn destroys the connection and opens another within the same acquire deadline.
          discard(connection, error as Error)
          return false
        }
      }
      if (idle >= options.checkAfterIdleMillis) {
        await socketEventsProcessed()
        return options.looksAlive(connection)
      }
      return true
    }
  }
}
