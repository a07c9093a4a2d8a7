import type { FastifyBaseLogger } from 'fastify'
import type { Knex } from 'knex'

// Cancelling a statement means a KILL QUERY sent on a separate connection: closing our side of
// the socket would leave the statement running on the server. The caller that gave up must not
// wait for that KILL (against a server that stopped answering it would last a whole connect
// timeout), so it goes on in the background, bounded, and the connection is marked disposed:
// the pool never hands it out again while its statement may still be running.

/** The part of a mysql2 connection a cancel needs. */
export interface KillableConnection {
  __knexUid?: string
  stream?: { destroy: (error?: Error) => void }
  __knex__disposed?: unknown
}

interface UsedConnections {
  used: Array<{ resource: KillableConnection }>
}

export interface QueryCanceller {
  /** Stops the statement running on `connection`; never rejects and never waits for the server. */
  cancel: (connection: KillableConnection, reason: string) => void
  /** The same, for the borrowed connection knex tagged with `knexUid` (ignored if it is back in the pool). */
  cancelOnConnection: (knexUid: string, reason: string) => boolean
}

/** Wraps the dialect's KILL QUERY; call before anything else replaces `client.cancelQuery`. */
export function createQueryCanceller (client: Knex.Client, cancelTimeoutMillis: number, log: FastifyBaseLogger): QueryCanceller {
  // knex's typings declare cancelQuery without its argument; the dialects take the connection.
  const kill = (client as unknown as { cancelQuery: (connection: KillableConnection) => Promise<unknown> }).cancelQuery.bind(client)

  const cancel = (connection: KillableConnection, reason: string): void => {
    connection.__knex__disposed = new Error(reason)
    const timer = setTimeout(() => {
      log.warn({ cancelTimeoutMillis, reason }, 'KILL QUERY did not complete in time; closing the connection')
      connection.stream?.destroy(new Error('KILL QUERY did not complete in time'))
    }, cancelTimeoutMillis)
    kill(connection).then(
      () => clearTimeout(timer),
      (error: unknown) => {
        clearTimeout(timer)
        log.warn({ err: error, reason }, 'KILL QUERY failed; closing the connection')
        connection.stream?.destroy(error as Error)
      }
    )
  }

  return {
    cancel,
    cancelOnConnection (knexUid, reason) {
      // Only a connection still borrowed can be running the statement; a released one may
      // already serve someone else.
      const pool = client.pool as unknown as UsedConnections | undefined
      const connection = pool?.used.find((used) => used.resource.__knexUid === knexUid)?.resource
      if (connection === undefined || connection.__knex__disposed !== undefined) return false
      cancel(connection, reason)
      return true
    }
  }
}
