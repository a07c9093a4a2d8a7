import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import type { Knex } from 'knex'
import { buildKnex } from '../client/build-knex'
import type { ClientRuntime } from '../client/runtime'
import { poolOf } from '../driver/tarn-pool'
import type { DialectClient, DriverConnection } from '../driver/types'
import { FST_FORK_SAFE_DB_BUDGET_EXCEEDED, FST_FORK_SAFE_DB_CLOSED } from '../errors'
import type { ResolvedOptions } from '../options/resolve-options'
import { acquireGuarded } from '../pool/acquire-guard'
import { budgetFor, reportBudget, type ConnectionBudget } from '../pool/budget'
import { warnIfBuiltInPrimary } from '../pool/cluster-placement'
import { checkHealth } from '../pool/health'
import { IdleKeeper } from '../pool/idle-keeper'
import { LagFallback, type FallbackTarget } from '../pool/lag-fallback'
import { DEFAULT_SERVER_LIMITS, type ServerLimits } from '../pool/server-limits'
import { whenDestroyed } from '../pool/retire'
import { CloseDeadline } from '../pool/shutdown'
import { describePool, type ForkSafeDbStats, type HostStats, type PoolState } from '../pool/stats'
import { warmUp } from '../pool/warm-up'
import { RegistrationMetrics } from '../telemetry/metrics'
import { lagGuardOf } from './lag-guard-of'
import { meteredPool } from './metered-pool'
import { abandon, destroyBuilt, type Built } from './teardown'
import { warmUpBound } from './warm-up-bound'
import { warmUpFailure } from './warm-up-failure'

/** What `dbPool.refresh()` resolves with. */
export interface RefreshResult {
  /** How many connections the pool held when refresh() was called: each is now closed. */
  retired: number
}

/**
 * Owns the knex instance of one registration and makes sure it belongs to the current process.
 *
 * - Lazy: nothing is built until first access, so importing or registering opens no socket.
 * - PID-checked: an instance built under another pid (a fork, a snapshot restore) is abandoned,
 *   never closed: closing would send COM_QUIT on sockets the parent still uses.
 * - Warm: `warm()` opens and verifies connections before the server accepts requests.
 * - Budgeted: the pool's size is capped at its share of the connection budget (pool/budget.ts),
 *   also after a pid change.
 * - Disposed: `close()` destroys only the instance this process built, after in-flight queries,
 *   and never takes longer than `closeTimeoutMillis` from `beginClose()` (pool/shutdown.ts).
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
  /** `replicaLagFallback`, once resolved at ready(). */
  #lagFallback: LagFallback | undefined
  /** `metrics`, when on: the API is loaded now (registration), a meter taken per built pool. */
  readonly #metrics: RegistrationMetrics | undefined

  constructor (options: ResolvedOptions, log: FastifyBaseLogger) {
    this.#options = options
    this.#log = log
    this.#metrics = options.metrics === undefined ? undefined : new RegistrationMetrics(options.metrics, log)
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
      abandon(previous)
      this.#rebuilds += 1
      this.#warm = 'no'
    }
    const { knex, runtime } = buildKnex(this.#options, this.#log, { serverLimits: (limits) => this.#learned(runtime, limits) })
    const built: Built = {
      pid, knex, runtime, keeper: new IdleKeeper(runtime), stopPlacementWatch: warnIfBuiltInPrimary(this.#log), lagGuard: lagGuardOf(runtime, this.#options, this.#log), metrics: undefined
    }
    try {
      built.metrics = this.#metrics?.start(runtime.identity, meteredPool(runtime, () => this.#hostStats(built)))
    } catch (error) {
      // A user's meter provider threw: what the runtime subscribed (counts, slow-query log) goes too.
      abandon(built)
      throw error
    }
    this.#built = built
    runtime.lagFallback = this.#lagFallback
    // A pool rebuilt after a pid change is not warmed again: its guard starts now.
    if (previous !== undefined) built.lagGuard?.start()
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
    pool.resize({ min: budget.poolMin, max: budget.poolMax })
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
      this.#startLagGuard()
      return
    }
    const started = performance.now()
    const built = this.#ownBuild()
    const { runtime } = built
    const client = runtime.client as NonNullable<ClientRuntime['client']>
    this.#warm = 'warming'
    const bound = warmUpBound(runtime, pluginTimeout)
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
          return poolOf(client)?.size.max ?? count
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
      const error = warmUpFailure(failure, bound.signal, this.#options)
      if (!this.#options.allowColdStart) {
        // ready() rejects: do not leave open sockets and tarn's reaper timer keeping the process
        // alive, nor a connect to a silent host that knex.destroy() would wait for.
        await this.#discard(error)
        throw error
      }
      this.#log.warn({ err: error }, 'warm-up failed; starting with a cold pool because allowColdStart is set')
      this.#startLagGuard()
      return
    } finally {
      bound.clear()
    }
    this.#warm = 'yes'
    built.lagGuard?.start()
    const keepAliveEveryMillis = this.#keepAlive(built)
    this.#log.info({
      connections: Math.min(count, poolOf(client)?.size.max ?? count),
      ms: Math.round(performance.now() - started),
      connection: this.#options.connection.description,
      waitTimeoutSeconds: (this.#limits ?? DEFAULT_SERVER_LIMITS).waitTimeoutSeconds,
      keepAliveEveryMillis
    }, 'connection pool warmed')
  }

  /** The lag guard, if the registration has one, starts once the pool is ready (building it if need be). */
  #startLagGuard (): void {
    if (this.#options.maxReplicaLagSeconds !== undefined && !this.#closing()) this.#ownBuild().lagGuard?.start()
  }

  /**
   * `replicaLagFallback`: while every host of this registration lags, its queries borrow from
   * `target`'s pool (pool/lag-fallback.ts). Set at ready(), before warm-up.
   */
  fallBackTo (target: ForkSafePool): void {
    this.#lagFallback = new LagFallback(target.#fallbackTarget())
    const own = this.#own
    if (own !== undefined) own.runtime.lagFallback = this.#lagFallback
  }

  /** This registration as another's fallback: its client and its KILLs, in the current process. */
  #fallbackTarget (): FallbackTarget {
    return {
      client: () => this.knex.client as DialectClient,
      openKillConnection: (connection) => this.#own?.runtime.openKillConnection(connection),
      hostRefused: (connection, verdict) => this.#own?.runtime.hostRefused(connection, verdict),
      killFailed: (connection, error) => this.#own?.runtime.killFailed(connection, error)
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
      budget: this.#budget,
      hosts: this.#hostStats(own),
      holders: own?.runtime.leaks?.holders() ?? []
    }
  }

  /** Each host's state and counts; before this process built its pool, every host `up` with nothing counted. */
  #hostStats (own: Built | undefined): HostStats[] {
    const pool = own?.runtime.client === undefined ? undefined : poolOf(own.runtime.client)
    if (own === undefined) {
      return this.#options.connection.hosts.map((host) => ({ host: host.label, state: 'up', connections: 0, failures: 0, inUse: 0 }))
    }
    const lent = pool?.borrowedConnections() ?? []
    const rows = own.runtime.hosts.stats([...lent, ...(pool?.idleConnections() ?? [])], lent)
    if (own.lagGuard === undefined) return rows
    // The lag guard's last reading of each host (null: not replicating).
    return rows.map((row, index) => {
      const lag = own.lagGuard?.lagOf(index)
      return lag === undefined ? row : { ...row, lagSeconds: Number.isFinite(lag) ? lag : null }
    })
  }

  /**
   * Retires every connection this process's pool holds now (idle ones at once, busy ones when
   * released: a transaction finishes first) and opens new ones in their place, for a DNS name
   * or a VIP that moved. Resolves once every one of them is gone and the pool is back at
   * pool.min (or could not be: the failed connects are the breaker's to report), with how many
   * were retired. Nothing is retired before the pool is built, or while it closes.
   */
  async refresh (): Promise<RefreshResult> {
    const runtime = this.#own?.runtime
    const pool = runtime?.client === undefined ? undefined : poolOf(runtime.client)
    if (runtime === undefined || pool === undefined || this.#closing()) return { retired: 0 }
    const existing = [...pool.idleConnections(), ...pool.borrowedConnections()]
    const gone = whenDestroyed(pool, existing)
    runtime.retire((connection) => existing.includes(connection), 'refresh')
    await gone
    await runtime.refill.running
    return { retired: existing.length }
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
    own.lagGuard?.stop()
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
    try {
      await destroyBuilt(own)
    } finally {
      this.#deadline.clear()
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
    await destroyBuilt(own, reason)
  }
}
