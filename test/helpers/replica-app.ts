import Fastify, { type FastifyInstance } from 'fastify'
import type { ForkSafeDbManager, RouteDbOptions } from '../../lib'
import type { Mariadbd } from '../../support/mariadbd'

// What the replica tests share: an app whose log lines can be awaited (the lag guard announces
// each change of a host's rotation once, so a test waits for that line rather than sleeping),
// and the app user's connections on a server, counted in its PROCESSLIST.

// The replica registration's decorators, typed as docs/request-scope.md shows.
declare module 'fastify' {
  interface FastifyInstance { replica: FastifyInstance['db'], replicaPool: ForkSafeDbManager }
  interface FastifyRequest { replica: FastifyInstance['db'] }
}
declare module '../../lib' {
  interface ForkSafeDbRouteOptions { replica?: RouteDbOptions }
}

export interface WatchedApp {
  app: FastifyInstance
  /** Resolves with the first log line (past or future) whose `msg` starts with `prefix`, counted from `after` lines. */
  logged: (prefix: string, after?: number) => Promise<Record<string, unknown>>
  /** How many lines were logged so far (for `logged(…, after)`). */
  count: () => number
}

export function watchedApp (): WatchedApp {
  const lines: Array<Record<string, unknown>> = []
  const waiters: Array<{ prefix: string, after: number, resolve: (line: Record<string, unknown>) => void }> = []
  const app = Fastify({
    logger: {
      level: 'info',
      stream: {
        write: (chunk: string) => {
          for (const text of chunk.split('\n').filter((part) => part !== '')) {
            const line = JSON.parse(text) as Record<string, unknown>
            lines.push(line)
            for (const waiter of [...waiters]) {
              if (lines.length > waiter.after && String(line.msg).startsWith(waiter.prefix)) {
                waiters.splice(waiters.indexOf(waiter), 1)
                waiter.resolve(line)
              }
            }
          }
        }
      }
    }
  })
  return {
    app,
    count: () => lines.length,
    logged: (prefix, after = 0) => {
      const found = lines.slice(after).find((line) => String(line.msg).startsWith(prefix))
      if (found !== undefined) return Promise.resolve(found)
      return new Promise((resolve) => waiters.push({ prefix, after, resolve }))
    }
  }
}

/** The app user's connections on `node` (the kit's own root connection and replication threads aside). */
export async function appConnections (node: Mariadbd): Promise<number> {
  const rows = await node.query("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE USER = 'app'")
  return Number(rows[0].n)
}

/**
 * Waits until the server has ended the threads of connections the client closed: a server
 * notices a closed socket on its own time and publishes no event, so this polls, bounded.
 */
export async function settledConnections (node: Mariadbd, expected: number, timeoutMillis = 5000): Promise<number> {
  const deadline = performance.now() + timeoutMillis
  let count = await appConnections(node)
  while (count !== expected && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 25))
    count = await appConnections(node)
  }
  return count
}
