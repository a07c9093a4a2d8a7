import type { FastifyBaseLogger } from 'fastify'
import { FST_FORK_SAFE_DB_CLOSE_TIMEOUT } from '../errors'
import { discard } from '../driver/discard'
import { borrowedConnections, idleConnections, poolOf } from '../driver/internals'
import type { ClientRuntime } from '../driver/runtime'

// Shutdown in two steps. As close() begins (Fastify's preClose, before it waits for in-flight
// requests), the pool stops opening connections and a deadline is armed. If the deadline passes,
// the database is not answering: every socket is destroyed *with an error* (mysql2 then fails
// the pending statement with it, the request answers, the connection comes back), connects in
// progress are torn down, and the connections that are borrowed but idle (a transaction on
// `fastify.db` that nobody finishes) are given back to the pool: knex.destroy() waits for every
// borrowed connection, and nothing else would ever return those.

export class CloseDeadline {
  #timer: NodeJS.Timeout | undefined

  get armed (): boolean {
    return this.#timer !== undefined
  }

  /** The pool opens no new connection from now on; after `closeTimeoutMillis` it is torn down. */
  arm (runtime: ClientRuntime, log: FastifyBaseLogger): void {
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

function tearDown (runtime: ClientRuntime, makeError: () => Error): void {
  runtime.tornDown = true
  const pool = runtime.client === undefined ? undefined : poolOf(runtime.client)
  const borrowed = pool === undefined ? [] : borrowedConnections(pool)
  const idle = pool === undefined ? [] : idleConnections(pool)
  // One error per connection: knex rewrites the message of each query error it sees.
  for (const connection of [...borrowed, ...idle, ...runtime.connecting]) discard(connection, makeError())
  for (const connection of borrowed) pool?.release(connection)
}
