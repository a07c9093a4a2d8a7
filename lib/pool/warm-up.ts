import { setTimeout as delay } from 'node:timers/promises'
import { pingOrDiscard } from './borrow-check'

// Warm-up opens the connections a process keeps before it accepts requests. When a whole fleet
// (re)starts at once, workers x pool.min simultaneous handshakes hit the server; so a process
// opens at most `concurrency` at a time, optionally after a random delay, and the first
// connection goes alone: it reads the server's limits (idle timeout, connection limits) that
// may change how many connections this process should keep at all.

export interface WarmUpConnection {
  ping: (callback: (error: Error | null) => void) => void
  query: (sql: string, callback: (error: Error | null, rows: Array<Record<string, unknown>>) => void) => void
  stream?: { destroy: (error?: Error) => void }
}

export interface WarmUpPlan {
  acquire: () => Promise<WarmUpConnection>
  release: (connection: WarmUpConnection) => Promise<unknown>
  count: number
  concurrency: number
  jitterMillis: number
  pingTimeoutMillis: number
  /** Runs on the first verified connection; returns how many connections to open in total. */
  afterFirst: (connection: WarmUpConnection) => Promise<number>
}

/** Opens and verifies the planned connections, then returns them all to the pool as its idle floor. */
export async function warmUp (plan: WarmUpPlan): Promise<void> {
  if (plan.jitterMillis > 0) await delay(Math.floor(Math.random() * plan.jitterMillis))
  const opened: WarmUpConnection[] = []
  const openOne = async () => {
    const connection = await plan.acquire()
    opened.push(connection)
    await pingOrDiscard(connection, plan.pingTimeoutMillis)
    return connection
  }
  try {
    const total = Math.min(plan.count, await plan.afterFirst(await openOne()))
    let remaining = total - 1
    // `concurrency` lanes, each opening one connection after another; all are held until the
    // end, or the pool would lend the same free connection out again.
    const lane = async () => {
      while (remaining > 0) {
        remaining -= 1
        await openOne()
      }
    }
    await Promise.all(Array.from({ length: Math.min(plan.concurrency, Math.max(0, remaining)) }, lane))
  } finally {
    for (const connection of opened) await plan.release(connection)
  }
}

/** The server's idle timeout and connection limits, as they apply to this connection. */
export interface ServerLimits {
  waitTimeoutSeconds: number
  maxConnections: number
  maxUserConnections: number
}

// MySQL's and MariaDB's defaults: 8 hours, 151 connections, no per-user limit.
export const DEFAULT_SERVER_LIMITS: ServerLimits = { waitTimeoutSeconds: 28_800, maxConnections: 151, maxUserConnections: 0 }

export function readServerLimits (connection: WarmUpConnection): Promise<ServerLimits> {
  const sql = 'SELECT @@SESSION.wait_timeout AS waitTimeout, @@GLOBAL.max_connections AS maxConnections, @@SESSION.max_user_connections AS maxUserConnections'
  return new Promise((resolve) => {
    connection.query(sql, (error, rows) => {
      const row = error === null ? rows?.[0] : undefined
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
