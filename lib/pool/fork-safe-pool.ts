import cluster from 'node:cluster'
import type { FastifyBaseLogger } from 'fastify'
import type { Knex } from 'knex'
import { pingOrDiscard } from './borrow-check'
import { warnIfBuiltInPrimary } from './cluster-placement'
import { computeBudget, serverTotal, type ConnectionBudget } from './budget'
import { FST_FORK_SAFE_DB_BUDGET_EXCEEDED, FST_FORK_SAFE_DB_CLOSE_TIMEOUT, FST_FORK_SAFE_DB_CLOSED, FST_FORK_SAFE_DB_WARMUP_FAILED } from '../errors'
import { createKnex, type PoolParts } from '../driver/build-knex'
import type { ResolvedOptions } from '../options/resolve-options'
import { describePool, type ForkSafeDbStats, type PoolState } from './stats'
import { scrubError } from '../logging/redact'
import type { StatementOwner } from '../query/owners'
import { refuseNewConnections, tearDownConnections } from './teardown'
import { DEFAULT_SERVER_LIMITS, readServerLimits, warmUp, type ServerLimits, type WarmUpConnection } from './warm-up'

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
  #parts: PoolParts | undefined
  #pid = 0
  #rebuilds = 0
  #warm: 'no' | 'warming' | 'yes' = 'no'
  #budget: ConnectionBudget | undefined
  #stopPlacementWatch = () => {}
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
      this.#parts?.keeper.stop()
      this.#stopPlacementWatch()
      this.#rebuilds += 1
      this.#warm = 'no'
    }
    const parts = createKnex(this.#options, this.#log)
    this.#instance = parts.knex
    this.#parts = parts
    // Until warm-up reads the server's own idle limit, assume the default one.
    parts.keeper.start(DEFAULT_SERVER_LIMITS.waitTimeoutSeconds, this.#options.pool.maxConnectionLifetimeMillis)
    this.#stopPlacementWatch = warnIfBuiltInPrimary(this.#log)
    this.#pid = pid
    this.#log.debug({ pid, connection: this.#options.connectionDescription }, 'built the connection pool')
    return this.#instance
  }

  /** Records `owner` for the statements `source` (a builder, a transaction's client) runs. */
  claim (source: object, owner: StatementOwner): void {
    this.#parts?.owners.claim(source, owner)
  }

  /** The connections `owner`'s statements are running on now. */
  runningConnections (owner: StatementOwner): string[] {
    return this.#parts?.owners.runningConnections(owner) ?? []
  }

  /**
   * Cancels the statement running on the borrowed connection knex tagged `knexUid`, if this
   * process's pool still lends it out. Returns whether a KILL QUERY was sent.
   */
  cancelQueryOn (knexUid: string, reason: string): boolean {
    if (this.#pid !== process.pid) return false
    return this.#parts?.canceller.cancelOnConnection(knexUid, reason) ?? false
  }

  /**
   * Opens `warmup` connections (at most `warmupConcurrency` at a time) and verifies each with a
   * round trip; applies the connection budget. Rejects with FST_FORK_SAFE_DB_WARMUP_FAILED
   * (driver error as `cause`) unless a cold start is allowed, and with
   * FST_FORK_SAFE_DB_BUDGET_EXCEEDED when the budget cannot fit and `onExceed` is 'fail'.
   */
  async warm (): Promise<void> {
    const count = this.#options.warmup
    if (count === 0) {
      // A numeric budget needs no server; one derived from the server's limits needs a
      // connection. Without a budget there is nothing to build yet.
      const budget = this.#options.budget
      if (budget !== undefined && budget.total !== 'server') this.#applyBudget(DEFAULT_SERVER_LIMITS)
      return
    }
    const started = performance.now()
    let limits = DEFAULT_SERVER_LIMITS
    const { client } = this.knex
    const parts = this.#parts as PoolParts
    this.#warm = 'warming'
    try {
      await warmUp({
        acquire: parts.acquireInternal as () => Promise<WarmUpConnection>,
        release: async (connection) => client.releaseConnection(connection),
        count,
        concurrency: this.#options.warmupConcurrency,
        jitterMillis: this.#options.warmupJitterMillis,
        pingTimeoutMillis: this.#options.pool.acquireTimeoutMillis,
        afterFirst: async (connection) => {
          limits = await readServerLimits(connection)
          return this.#applyBudget(limits)
        }
      })
    } catch (driverError) {
      this.#warm = 'no'
      if (this.#closing()) {
        // close() began while warming (a worker retired during start-up): not a failure.
        this.#log.debug('warm-up stopped because the pool is closing')
        return
      }
      if (driverError instanceof FST_FORK_SAFE_DB_BUDGET_EXCEEDED) {
        await this.#discardInstance()
        throw driverError
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
    this.#warm = 'yes'
    const keepAliveEveryMillis = parts.keeper.start(limits.waitTimeoutSeconds, this.#options.pool.maxConnectionLifetimeMillis)
    this.#log.info(
      { connections: Math.min(count, client.pool.max), ms: Math.round(performance.now() - started), connection: this.#options.connectionDescription, waitTimeoutSeconds: limits.waitTimeoutSeconds, keepAliveEveryMillis },
      'connection pool warmed'
    )
  }

  /**
   * Caps this process's pool at its share of the budget (tarn reads max and min live) and
   * reports a configuration that cannot fit. Returns how many connections warm-up may open.
   */
  #applyBudget (limits: ServerLimits): number {
    const budget = this.#options.budget
    const pool = this.knex.client.pool as { max: number, min: number }
    if (budget === undefined) return pool.max
    const { total, from } = budget.total === 'server'
      ? serverTotal(limits.maxConnections, limits.maxUserConnections)
      : { total: budget.total, from: 'option' as const }
    const { pool: configured } = this.#options
    const shares = computeBudget({ ...budget, total, poolMax: configured.max, poolMin: configured.min })
    this.#budget = { workers: budget.workers, workersFrom: budget.workersFrom, total, totalFrom: from, reserve: budget.reserve, ...shares }
    pool.max = shares.poolMax
    pool.min = shares.poolMin
    const report = { budget: this.#budget }
    if (!shares.fits) {
      if (budget.onExceed === 'fail') throw new FST_FORK_SAFE_DB_BUDGET_EXCEEDED(this.#options.decorator, shares.problem)
      this.#log.warn(report, `the connection budget does not fit: ${shares.problem ?? ''}`)
    } else if (budget.workersFrom === 'assumed' && !cluster.isPrimary) {
      this.#log.warn(report, 'connection budget: the number of workers is unknown, assuming 1; set budget.workers or WEB_CONCURRENCY')
    } else {
      this.#log.info(report, 'connection budget applied')
    }
    return pool.max
  }

  /** Counts and timings of this process's pool: what `fastify.dbPool.stats()` returns. */
  stats (): ForkSafeDbStats {
    const parts = this.#pid === process.pid ? this.#parts : undefined
    return {
      pid: process.pid,
      decorator: this.#options.decorator,
      state: this.#state(parts !== undefined),
      warm: parts !== undefined && this.#warm === 'yes',
      rebuilds: this.#rebuilds,
      ...describePool(parts?.knex.client.pool, parts?.counters),
      budget: this.#budget
    }
  }

  #state (built: boolean): PoolState {
    if (this.#closed) return 'closed'
    if (this.#deadline !== undefined) return 'closing'
    if (!built) return 'new'
    return this.#warm === 'warming' ? 'warming' : 'open'
  }

  /**
   * Borrows a connection and pings it, within a short deadline: true when the database answers.
   * Never rejects, so it suits readiness probes and @fastify/under-pressure's `healthCheck`.
   */
  async check (): Promise<boolean> {
    if (this.#closing()) return false
    let client: Knex.Client
    try {
      // Builds the pool for this pid if need be.
      client = this.knex.client
    } catch {
      return false
    }
    const parts = this.#parts as PoolParts
    let connection: WarmUpConnection | undefined
    try {
      connection = await parts.acquireInternal() as WarmUpConnection
      // One that does not answer is closed, not handed back to the pool as if it were alive.
      await pingOrDiscard(connection, parts.pingTimeoutMillis)
      return true
    } catch (error) {
      this.#log.debug({ err: scrubError(error, this.#options.secrets) }, 'health check failed')
      return false
    } finally {
      if (connection !== undefined) await client.releaseConnection(connection)
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
      tearDownConnections(instance.client, this.#parts?.connecting ?? new Set(), () => new FST_FORK_SAFE_DB_CLOSE_TIMEOUT(decorator, closeTimeoutMillis))
    }, closeTimeoutMillis)
    // The deadline must not keep a process alive that has nothing else left to do.
    this.#deadline.unref()
  }

  /** Destroys the instance this process built, waiting for in-flight queries; abandons any other. */
  async close (): Promise<void> {
    this.beginClose()
    this.#closed = true
    this.#parts?.keeper.stop()
    this.#stopPlacementWatch()
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
    this.#parts?.keeper.stop()
    this.#stopPlacementWatch()
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

function describeError (error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    return typeof code === 'string' ? `${code}: ${error.message}` : error.message
  }
  return String(error)
}
