import type { DriverConnection } from '../driver/types'

// The server's idle timeout decides how often idle connections must be pinged, and its
// connection limits can decide how many connections each process may hold (a budget with
// `total: 'server'`). They are read on the first connection a pool opens.

/** The server's idle timeout and connection limits, as they apply to this connection. */
export interface ServerLimits {
  waitTimeoutSeconds: number
  maxConnections: number
  maxUserConnections: number
}

// MySQL's and MariaDB's defaults: 8 hours, 151 connections, no per-user limit.
export const DEFAULT_SERVER_LIMITS: ServerLimits = { waitTimeoutSeconds: 28_800, maxConnections: 151, maxUserConnections: 0 }

const SQL = 'SELECT @@SESSION.wait_timeout AS waitTimeout, @@GLOBAL.max_connections AS maxConnections, @@SESSION.max_user_connections AS maxUserConnections'

/** Rejects with the driver's error when the query fails: the caller decides whether a guess will do. */
export function readServerLimits (connection: DriverConnection): Promise<ServerLimits> {
  return new Promise((resolve, reject) => {
    connection.query(SQL, [], (error, rows) => {
      if (error !== null) {
        reject(error)
        return
      }
      const row = rows?.[0]
      // A value the server reports oddly (a proxy answering for it) falls back to the default.
      const read = (key: string, fallback: number, min: number) => {
        const value = Number(row?.[key])
        return Number.isFinite(value) && value >= min ? value : fallback
      }
      resolve({
        waitTimeoutSeconds: read('waitTimeout', DEFAULT_SERVER_LIMITS.waitTimeoutSeconds, 1),
        maxConnections: read('maxConnections', DEFAULT_SERVER_LIMITS.maxConnections, 1),
        maxUserConnections: read('maxUserConnections', DEFAULT_SERVER_LIMITS.maxUserConnections, 0)
      })
    })
  })
}
