import type { FastifyBaseLogger } from 'fastify'
import { discard } from '../driver/discard'
import { poolOf } from '../driver/tarn-pool'
import type { DialectClient, DriverConnection } from '../driver/types'
import { FST_FORK_SAFE_DB_CLOSE_TIMEOUT } from '../errors'

// Shutdown in two steps. As close() begins (Fastify's preClose, before it waits for in-flight
// requests), the pool stops opening connections and a deadline is armed. If the deadline passes,
// the database is not answering: every socket is destroyed *with an error* (mysql2 then fails
// the pending statement with it, the request answers, the connection comes back), connects in
// progress are torn down, and the connections that are borrowed but idle (a transaction on
// `fastify.db` that nobody finishes) are given back to the pool: knex.destroy() waits for every
// borrowed connection, and nothing else would ever return those.

/** What the deadline needs from its pool's state (the client runtime provides it). */
export interface ShutdownHost {
  readonly options: { readonly decorator: string, readonly closeTimeoutMillis: number }
  readonly client: DialectClient | undefined
  /** Connections being opened: a close deadline must reach a connect stuck in a black hole. */
  readonly connecting: ReadonlySet<DriverConnection>
  closing: boolean
  tornDown: boolean
}

export class CloseDeadline {
  #timer: NodeJS.Timeout | undefined

  get armed (): boolean {
    return this.#timer !== undefined
  }

  /** The pool opens no new connection from now on; after `closeTimeoutMillis` it is torn down. */
  arm (runtime: ShutdownHost, log: FastifyBaseLogger): void {
    if (this.#timer !== undefined) return
    const { decorator, closeTimeoutMillis } = runtime.options
    runtime.closing = true
    this.#timer = setTimeout(() => {
      const inUse = runtime.client === undefined ? 0 : poolOf(runtime.client)?.numUsed() ?? 0
      log.error({ inUse, closeTimeoutMillis }, 'the database did not finish in time for shutdown; tearing its connections down')
      tearDown(runtime, () => new FST_FORK_SAFE_DB_CLOSE_TIMEOUT(decorator, closeTimeoutMillis))
    }, closeTimeoutMillis)
    // The deadline must not keep a process alive that has nothing else left to do.
    this.#timer.unref()
  }

  clear (): void {
    clearTimeout(this.#timer)
  }
}

function tearDown (runtime: ShutdownHost, makeError: () => Error): void {
  runtime.tornDown = true
  const pool = runtime.client === undefined ? undefined : poolOf(runtime.client)
  const borrowed = pool === undefined ? [] : pool.borrowedConnections()
  const idle = pool === undefined ? [] : pool.idleConnections()
  // One error per connection: knex rewrites the message of each query error it sees.
  for (const connection of [...borrowed, ...idle, ...runtime.connecting]) discard(connection, makeError())
  for (const connection of borrowed) pool?.release(connection)
}
