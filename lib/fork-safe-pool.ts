import type { FastifyBaseLogger } from 'fastify'
import type { Knex } from 'knex'
import { discard, ping } from './borrow-check'
import { FST_FORK_SAFE_DB_CLOSE_TIMEOUT, FST_FORK_SAFE_DB_CLOSED, FST_FORK_SAFE_DB_WARMUP_FAILED } from './errors'
import type { IdleKeeper } from './idle-keeper'
import { createKnex, type PoolParts } from './knex-factory'
import type { ResolvedOptions } from './options'
import { scrubError } from './redact'
import { refuseNewConnections, tearDownConnections } from './teardown'

/**
 * Owns the knex instance of one registration and makes sure it belongs to the current process.
 *
 * - Lazy: nothing is built until first access, so importing or registering opens no socket.
 * - PID-checked: an instance built under another pid (a fork, a snapshot restore) is abandoned,
 *   never closed: closing would send COM_QUIT on sockets the parent still uses.
 * - Warm: `warm()` opens and verifies connections before the server accepts requests.
 * - Disposed: `close()` destroys only the instance this process built, after in-flight queries,
 *   and never takes longer than `closeTimeoutMillis` from `beginClose()`.
 */
export class ForkSafePool {
  readonly #options: ResolvedOptions
  readonly #log: FastifyBaseLogger
  #instance: Knex | undefined
  #keeper: IdleKeeper | undefined
  #connecting: PoolParts['connecting'] = new Set()
  #canceller: PoolParts['canceller'] | undefined
  #pid = 0
  #closed = false
  #deadline: NodeJS.Timeout | undefined

  constructor (options: ResolvedOptions, log: FastifyBaseLogger) {
    this.#options = options
    this.#log = log
  }

  /** The knex instance for this process, built on first access and rebuilt after a pid change. */
  get knex (): Knex {
    // Building is synchronous, so concurrent first accesses cannot race: one build per pid.
    const pid = process.pid
    if (this.#instance !== undefined && this.#pid === pid) return this.#instance
    return this.#build(pid)
  }

  #build (pid: number): Knex {
    if (this.#closed) throw new FST_FORK_SAFE_DB_CLOSED(this.#options.decorator)
    if (this.#instance !== undefined) {
      this.#log.warn(
        { previousPid: this.#pid, pid },
        'process id changed: abandoning the pool inherited from the parent process (its connections are left open for the parent) and building a fresh one'
      )
      // Its keeper must not ping the parent's sockets: stopping a timer sends nothing.
      this.#keeper?.stop()
    }
    const { knex, keeper, connecting, canceller } = createKnex(this.#options, this.#log)
    this.#instance = knex
    this.#keeper = keeper
    this.#connecting = connecting
    this.#canceller = canceller
    // Until warm-up reads the server's own idle limit, assume the default one.
    keeper.start(DEFAULT_WAIT_TIMEOUT_SECONDS, this.#options.pool.maxConnectionLifetimeMillis)
    this.#pid = pid
    this.#log.debug({ pid, connection: this.#options.connectionDescription }, 'built the connection pool')
    return this.#instance
  }

  /**
   * Cancels the statement running on the borrowed connection knex tagged `knexUid`, if this
   * process's pool still lends it out. Returns whether a KILL QUERY was sent.
   */
  cancelQueryOn (knexUid: string, reason: string): boolean {
    if (this.#pid !== process.pid) return false
    return this.#canceller?.cancelOnConnection(knexUid, reason) ?? false
  }

  /**
   * Opens `warmup` connections in parallel and verifies each with a round trip. Rejects with
   * FST_FORK_SAFE_DB_WARMUP_FAILED (driver error as `cause`) unless a cold start is allowed.
   */
  async warm (): Promise<void> {
    const count = this.#options.warmup
    if (count === 0) return
    const started = performance.now()
    let waitTimeoutSeconds = DEFAULT_WAIT_TIMEOUT_SECONDS
    try {
      waitTimeoutSeconds = await this.#openAndVerify(count)
    } catch (driverError) {
      if (this.#closing()) {
        // close() began while warming (a worker retired during start-up): not a failure.
        this.#log.debug('warm-up stopped because the pool is closing')
        return
      }
      const cause = scrubError(driverError, this.#options.secrets)
      const error = new FST_FORK_SAFE_DB_WARMUP_FAILED(this.#options.decorator, describeError(cause), { cause })
      if (!this.#options.allowColdStart) {
        // ready() rejects: do not leave open sockets and tarn's reaper timer keeping the process alive.
        await this.#discardInstance()
        throw error
      }
      this.#log.warn({ err: error }, 'warm-up failed; starting with a cold pool because allowColdStart is set')
      return
    }
    const keepAliveEveryMillis = this.#keeper?.start(waitTimeoutSeconds, this.#options.pool.maxConnectionLifetimeMillis)
    this.#log.info(
      { connections: count, ms: Math.round(performance.now() - started), connection: this.#options.connectionDescription, waitTimeoutSeconds, keepAliveEveryMillis },
      'connection pool warmed'
    )
  }

  /** Opens and pings `count` connections; resolves with the server's `wait_timeout` (seconds). */
  async #openAndVerify (count: number): Promise<number> {
    const { client } = this.knex
    const acquired = await Promise.allSettled(Array.from({ length: count }, () => client.acquireConnection()))
    const connections = acquired.flatMap((result) => result.status === 'fulfilled' ? [result.value] : [])
    try {
      const failed = acquired.find((result) => result.status === 'rejected')
      if (failed !== undefined) throw failed.reason
      await Promise.all(connections.map(async (connection) => {
        try {
          await ping(connection, this.#options.pool.acquireTimeoutMillis)
        } catch (error) {
          // Released as dead, so no later borrow can trust it.
          discard(connection, error as Error)
          throw error
        }
      }))
      return await readWaitTimeout(connections[0])
    } finally {
      // Released connections stay open as the idle floor (tarn keeps `pool.min` of them).
      for (const connection of connections) await client.releaseConnection(connection)
    }
  }

  /**
   * Shutdown has begun (Fastify's preClose, before in-flight requests finish): open no new
   * connection, and arm the deadline after which whatever is still running is torn down.
   */
  beginClose (): void {
    const instance = this.#ownInstance()
    if (instance === undefined || this.#deadline !== undefined) return
    const { decorator, closeTimeoutMillis } = this.#options
    refuseNewConnections(instance.client, () => new FST_FORK_SAFE_DB_CLOSED(decorator))
    this.#deadline = setTimeout(() => {
      const used = instance.client.pool?.numUsed() ?? 0
      this.#log.error({ inUse: used, closeTimeoutMillis }, 'the database did not finish in time for shutdown; tearing its connections down')
      tearDownConnections(instance.client, this.#connecting, () => new FST_FORK_SAFE_DB_CLOSE_TIMEOUT(decorator, closeTimeoutMillis))
    }, closeTimeoutMillis)
    // The deadline must not keep a process alive that has nothing else left to do.
    this.#deadline.unref()
  }

  /** Destroys the instance this process built, waiting for in-flight queries; abandons any other. */
  async close (): Promise<void> {
    this.beginClose()
    this.#closed = true
    this.#keeper?.stop()
    const instance = this.#ownInstance()
    this.#instance = undefined
    try {
      if (instance !== undefined) await instance.destroy()
    } finally {
      clearTimeout(this.#deadline)
    }
    if (instance !== undefined) this.#log.debug('connection pool closed')
  }

  #closing (): boolean {
    return this.#closed || this.#deadline !== undefined
  }

  async #discardInstance (): Promise<void> {
    const instance = this.#ownInstance()
    this.#keeper?.stop()
    this.#instance = undefined
    await instance?.destroy()
  }

  /** The instance, if this process built it; an inherited one is left untouched. */
  #ownInstance (): Knex | undefined {
    if (this.#instance === undefined || this.#pid === process.pid) return this.#instance
    this.#log.debug({ ownerPid: this.#pid, pid: process.pid }, 'leaving the pool of another process untouched')
    return undefined
  }
}

// MySQL's and MariaDB's default: 8 hours.
const DEFAULT_WAIT_TIMEOUT_SECONDS = 28_800

/** The idle limit the server applies to this connection, in seconds. */
function readWaitTimeout (connection: { query: (sql: string, callback: (error: Error | null, rows: Array<{ seconds: number }>) => void) => void }): Promise<number> {
  return new Promise((resolve) => {
    connection.query('SELECT @@SESSION.wait_timeout AS seconds', (error, rows) => {
      const seconds = Number(rows?.[0]?.seconds)
      resolve(error === null && Number.isFinite(seconds) && seconds > 0 ? seconds : DEFAULT_WAIT_TIMEOUT_SECONDS)
    })
  })
}

function describeError (error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    return typeof code === 'string' ? `${code}: ${error.message}` : error.message
  }
  return String(error)
}
