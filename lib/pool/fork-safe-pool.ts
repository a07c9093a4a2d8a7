import type { FastifyBaseLogger } from 'fastify'
import type { Knex } from 'knex'
import { buildKnex } from '../driver/build-knex'
import { poolOf, poolSize, resizePool, type DriverConnection } from '../driver/internals'
import type { ClientRuntime } from '../driver/runtime'
import { discard } from '../driver/discard'
import { FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, FST_FORK_SAFE_DB_BUDGET_EXCEEDED, FST_FORK_SAFE_DB_CLOSED, FST_FORK_SAFE_DB_WARMUP_FAILED } from '../errors'
import { scrubError } from '../logging/redact'
import type { ResolvedOptions } from '../options/resolve-options'
import { acquireGuarded } from './acquire-guard'
import { budgetFor, reportBudget, type ConnectionBudget } from './budget'
import { warnIfBuiltInPrimary } from './cluster-placement'
import { checkHealth } from './health'
import { IdleKeeper } from './idle-keeper'
import { DEFAULT_SERVER_LIMITS, type ServerLimits } from './server-limits'
import { CloseDeadline } from './shutdown'
import { describePool, type ForkSafeDbStats, type PoolState } from './stats'
import { warmUp } from './warm-up'
import { warmUpBoundMillis } from './warm-up-bound'

/** The knex instance one process built, and what keeps it. */
interface Built {
  pid: number
  knex: Knex
  runtime: ClientRuntime
  keeper: IdleKeeper
  stopPlacementWatch: () => void
}

/**
 * Owns the knex instance of one registration and makes sure it belongs to the current process.
 *
 * - Lazy: nothing is built until first access, so importing or registering opens no socket.
 * - PID-checked: an instance built under another pid (a fork, a snapshot restore) is abandoned,
 *   never closed: closing would send COM_QUIT on sockets the parent still uses.
 * - Warm: `warm()` opens and verifies connections before the server accepts requests.
 * - Budgeted: the pool's size is capped at its share of the connection budget (budget.ts),
 *   also after a pid change.
 * - Disposed: `close()` destroys only the instance this process built, after in-flight queries,
 *   and never takes longer than `closeTimeoutMillis` from `beginClose()` (shutdown.ts).
 */
export class ForkSafePool {
  readonly #options: ResolvedOptions
  readonly #log: FastifyBaseLogger
  #built: Built | undefined
  #rebuilds = 0
  #warm: 'no' | 'warming' | 'yes' = 'no'
  /** The server's limits, once read: the same server for every pid. */
  #limits: ServerLimits | undefined
  #budget: ConnectionBudget | undefined
  #budgetReported = false
  #closed = false
  readonly #deadline = new CloseDeadline()

  constructor (options: ResolvedOptions, log: FastifyBaseLogger) {
    this.#options = options
    this.#log = log
  }

  /** The knex instance for this process, built on first access and rebuilt after a pid change. */
  get knex (): Knex {
    // Building is synchronous, so concurrent first accesses cannot race: one build per pid.
    const pid = process.pid
    const built = this.#built
    if (built !== undefined && built.pid === pid) return built.knex
    return this.#build(pid).knex
  }

  /** What this process built, if it built anything; never another process's. */
  get #own (): Built | undefined {
    return this.#built?.pid === process.pid ? this.#built : undefined
  }

  #build (pid: number): Built {
    if (this.#closed) throw new FST_FORK_SAFE_DB_CLOSED(this.#options.decorator)
    const previous = this.#built
    if (previous !== undefined) {
      this.#log.warn(
        { previousPid: previous.pid, pid },
        'process id changed: abandoning the pool inherited from the parent process (its connections are left open for the parent) and building a fresh one'
      )
      // Its keeper must not ping the parent's sockets: stopping a timer sends nothing.
      previous.keeper.stop()
      previous.stopPlacementWatch()
      previous.runtime.breaker.stop()
      this.#rebuilds += 1
      this.#warm = 'no'
    }
    const { knex, runtime } = buildKnex(this.#options, this.#log, { serverLimits: (limits) => this.#learned(runtime, limits) })
    const built: Built = { pid, knex, runtime, keeper: new IdleKeeper(runtime), stopPlacementWatch: warnIfBuiltInPrimary(this.#log) }
    this.#built = built
    runtime.serverLimits = this.#limits
    // A budget needing the server's limits holds the first query back until they are read.
    runtime.needsLimitsFirst = this.#options.budget?.total === 'server' && this.#limits === undefined
    this.#applyBudget(runtime)
    this.#keepAlive(built)
    this.#log.debug({ pid, connection: this.#options.connection.description }, 'built the connection pool')
    return built
  }

  /** This process's runtime read the server's limits on one of its connections. */
  #learned (runtime: ClientRuntime, limits: ServerLimits): void {
    const own = this.#own
    if (own?.runtime !== runtime) return
    this.#limits = limits
    this.#applyBudget(runtime)
    this.#keepAlive(own)
    this.#reportBudget()
  }

  #keepAlive (built: Built): number {
    const waitTimeoutSeconds = (this.#limits ?? DEFAULT_SERVER_LIMITS).waitTimeoutSeconds
    return built.keeper.start(waitTimeoutSeconds, this.#options.pool.maxConnectionLifetimeMillis)
  }

  /** Caps the runtime's pool at its share, once the budget can be computed (tarn reads max and min live). */
  #applyBudget (runtime: ClientRuntime): void {
    const options = this.#options.budget
    const pool = runtime.client === undefined ? undefined : poolOf(runtime.client)
    if (options === undefined || pool === undefined) return
    const budget = budgetFor(options, this.#options.pool, this.#limits)
    if (budget === undefined) return
    this.#budget = budget
    resizePool(pool, { min: budget.poolMin, max: budget.poolMax })
  }

  /** Reports the applied budget once; throws FST_FORK_SAFE_DB_BUDGET_EXCEEDED for `onExceed: 'fail'`. */
  #reportBudget (): void {
    const options = this.#options.budget
    if (options === undefined || this.#budget === undefined || this.#budgetReported) return
    reportBudget(this.#budget, options, this.#options.decorator, this.#log)
    this.#budgetReported = true
  }

  /** Sends KILL QUERY for the statement on `connection`, a connection of this process's pool. */
  cancel (connection: DriverConnection, reason: string): void {
    this.#own?.runtime.canceller.cancel(connection, reason)
  }

  /**
   * Opens `warmup` connections (at most `warmupConcurrency` at a time) and verifies each with a
   * round trip; applies the connection budget. Rejects with FST_FORK_SAFE_DB_WARMUP_FAILED
   * (driver error as `cause`) unless a cold start is allowed, and with
   * FST_FORK_SAFE_DB_BUDGET_EXCEEDED when the budget cannot fit and `onExceed` is 'fail'.
   * Under Fastify's `pluginTimeout` it gives up first (see warm-up-bound.ts), closing the
   * sockets it was opening.
   */
  async warm (pluginTimeout?: number): Promise<void> {
    const count = this.#options.warmup
    if (count === 0) {
      // A numeric budget is known without a server: report it now. One derived from the server's
      // limits is applied before the first query borrows a connection.
      if (typeof this.#options.budget?.total === 'number') {
        this.#ownBuild()
        this.#reportBudget()
      }
      return
    }
    const started = performance.now()
    const built = this.#ownBuild()
    const { runtime } = built
    const client = runtime.client as NonNullable<ClientRuntime['client']>
    this.#warm = 'warming'
    const bound = this.#bound(runtime, pluginTimeout)
    try {
      await warmUp({
        acquire: () => acquireGuarded(client, runtime, false),
        release: async (connection) => client.releaseConnection(connection),
        count,
        concurrency: this.#options.warmupConcurrency,
        jitterMillis: this.#options.warmupJitterMillis,
        pingTimeoutMillis: this.#options.pool.acquireTimeoutMillis,
        signal: bound.signal,
        afterFirst: async (connection) => {
          await runtime.learnServerLimits(connection)
          this.#reportBudget()
          const pool = poolOf(client)
          return pool === undefined ? count : poolSize(pool).max
        }
      })
    } catch (failure) {
      this.#warm = 'no'
      if (this.#closing()) {
        // close() began while warming (a worker retired during start-up): not a failure.
        this.#log.debug('warm-up stopped because the pool is closing')
        return
      }
      if (failure instanceof FST_FORK_SAFE_DB_BUDGET_EXCEEDED) {
        await this.#discard(failure)
        throw failure
      }
      const cause = scrubError(bound.signal.aborted ? bound.signal.reason : driverErrorOf(failure), this.#options.secrets)
      // A connect that never completes ends as an acquire timeout: say so, and how long it was.
      const description = failure instanceof FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT
        ? `no connection was opened within pool.acquireTimeoutMillis (${this.#options.pool.acquireTimeoutMillis} ms)`
        : describeError(cause)
      const error = new FST_FORK_SAFE_DB_WARMUP_FAILED(this.#options.decorator, description, { cause })
      if (!this.#options.allowColdStart) {
        // ready() rejects: do not leave open sockets and tarn's reaper timer keeping the process
        // alive, nor a connect to a silent host that knex.destroy() would wait for.
        await this.#discard(error)
        throw error
      }
      this.#log.warn({ err: error }, 'warm-up failed; starting with a cold pool because allowColdStart is set')
      return
    } finally {
      bound.clear()
    }
    this.#warm = 'yes'
    const keepAliveEveryMillis = this.#keepAlive(built)
    const pool = poolOf(client)
    this.#log.info({
      connections: Math.min(count, pool === undefined ? count : poolSize(pool).max),
      ms: Math.round(performance.now() - started),
      connection: this.#options.connection.description,
      waitTimeoutSeconds: (this.#limits ?? DEFAULT_SERVER_LIMITS).waitTimeoutSeconds,
      keepAliveEveryMillis
    }, 'connection pool warmed')
  }

  /**
   * Aborts warm-up within Fastify's `pluginTimeout`, failing the connects in progress (a silent
   * host's sockets) with a timeout that says how long warm-up waited.
   */
  // One signal for both ends of a warm-up (the pool destroyed, or the bound reached), joined by
  // hand: with AbortSignal.any() every later request of the process cost markedly more
  // instructions in bench:instructions, though the joined signal was done with.
  #bound (runtime: ClientRuntime, pluginTimeout: number | undefined): { signal: AbortSignal, clear: () => void } {
    const expired = new AbortController()
    const stopped = runtime.warmUpStop.signal
    const onStop = () => expired.abort(stopped.reason)
    if (stopped.aborted) onStop()
    else stopped.addEventListener('abort', onStop, { once: true })
    const millis = warmUpBoundMillis(pluginTimeout)
    const timer = millis === undefined
      ? undefined
      : setTimeout(() => {
        const error = Object.assign(
          new Error(`warm-up gave up after ${millis} ms without an answer from the database, before Fastify's pluginTimeout (${String(pluginTimeout)} ms)`),
          { code: 'ETIMEDOUT' }
        )
        expired.abort(error)
        for (const connection of runtime.connecting) discard(connection, error)
      }, millis)
    timer?.unref()
    return {
      signal: expired.signal,
      clear: () => {
        clearTimeout(timer)
        stopped.removeEventListener('abort', onStop)
      }
    }
  }

  /** What this process built, building it if need be. */
  #ownBuild (): Built {
    const { pid } = process
    return this.#built?.pid === pid ? this.#built : this.#build(pid)
  }

  /** Counts and timings of this process's pool: what `fastify.dbPool.stats()` returns. */
  stats (): ForkSafeDbStats {
    const own = this.#own
    return {
      pid: process.pid,
      decorator: this.#options.decorator,
      state: this.#state(own !== undefined),
      warm: own !== undefined && this.#warm === 'yes',
      rebuilds: this.#rebuilds,
      ...describePool(own?.runtime.client === undefined ? undefined : poolOf(own.runtime.client), own?.runtime.counters),
      budget: this.#budget
    }
  }

  #state (built: boolean): PoolState {
    if (this.#closed) return 'closed'
    if (this.#deadline.armed) return 'closing'
    if (!built) return 'new'
    return this.#warm === 'warming' ? 'warming' : 'open'
  }

  /**
   * Borrows a connection and pings it, within a short deadline: true when the database answers.
   * Never rejects, so it suits readiness probes and @fastify/under-pressure's `healthCheck`.
   */
  async check (): Promise<boolean> {
    if (this.#closing()) return false
    try {
      // Builds the pool for this pid if need be.
      return await checkHealth(this.#ownBuild().runtime)
    } catch {
      return false
    }
  }

  /**
   * Shutdown has begun (Fastify's preClose, before in-flight requests finish): open no new
   * connection, and arm the deadline after which whatever is still running is torn down.
   */
  beginClose (): void {
    const own = this.#own
    if (own === undefined) return
    this.#deadline.arm(own.runtime, this.#log)
  }

  /** Destroys the instance this process built, waiting for in-flight queries; abandons any other. */
  async close (): Promise<void> {
    this.beginClose()
    this.#closed = true
    const own = this.#own
    if (this.#built !== undefined && own === undefined) {
      this.#log.debug({ ownerPid: this.#built.pid, pid: process.pid }, 'leaving the pool of another process untouched')
    }
    this.#built = undefined
    if (own === undefined) return
    own.keeper.stop()
    own.stopPlacementWatch()
    own.runtime.breaker.stop()
    try {
      await own.knex.destroy()
    } finally {
      this.#deadline.clear()
      own.runtime.deadlines?.stop()
    }
    this.#log.debug('connection pool closed')
  }

  #closing (): boolean {
    return this.#closed || this.#deadline.armed
  }

  /** Destroys what this process built after a failed warm-up; the next access builds afresh. */
  async #discard (reason: Error): Promise<void> {
    const own = this.#own
    if (own === undefined) return
    this.#built = undefined
    own.keeper.stop()
    own.stopPlacementWatch()
    own.runtime.breaker.stop()
    // knex.destroy() waits for connects in progress; a silent host's would last connectTimeout.
    for (const connection of own.runtime.connecting) discard(connection, reason)
    await own.knex.destroy()
    own.runtime.deadlines?.stop()
  }
}

// A failed connect reaches warm-up coded (FST_FORK_SAFE_DB_CONNECT_TIMEOUT, _CONNECT_REFUSED,
// _UNAVAILABLE); warm-up's own error names what the driver said, and keeps it as its cause.
const CONNECT_FAILURES = new Set(['FST_FORK_SAFE_DB_CONNECT_TIMEOUT', 'FST_FORK_SAFE_DB_CONNECT_REFUSED', 'FST_FORK_SAFE_DB_UNAVAILABLE'])

function driverErrorOf (error: unknown): unknown {
  const { code, cause } = (error ?? {}) as { code?: unknown, cause?: unknown }
  return typeof code === 'string' && CONNECT_FAILURES.has(code) && cause !== undefined ? cause : error
}

function describeError (error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    return typeof code === 'string' ? `${code}: ${error.message}` : error.message
  }
  return String(error)
}
