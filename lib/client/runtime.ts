import { inspect } from 'node:util'
import type { FastifyBaseLogger } from 'fastify'
import { KnexMySql2Client } from '../driver/knex-parts'
import { poolOf } from '../driver/tarn-pool'
import type { DialectClient, DriverConnection } from '../driver/types'
import type { PoolIdentity } from '../events/channels'
import type { RoleVerdict } from '../hosts/host'
import { HostSet, type RetireHost } from '../hosts/host-set'
import { scrubError } from '../logging/redact'
import type { ResolvedOptions } from '../options/resolve-options'
import type { AcquireHost } from '../pool/acquire-guard'
import { BorrowCheck } from '../pool/borrow-check'
import type { ConnectGate } from '../pool/connect-breaker'
import { mayLendDirectly } from '../pool/direct-borrow'
import type { HealthHost } from '../pool/health'
import type { KeeperHost } from '../pool/idle-keeper'
import { Refill, retireConnections, type RetireReason } from '../pool/retire'
import type { LagFallback } from '../pool/lag-fallback'
import { DEFAULT_SERVER_LIMITS, readServerLimits, type ServerLimits } from '../pool/server-limits'
import type { ShutdownHost } from '../pool/shutdown'
import { countEvents, type PoolCounters } from '../pool/stats'
import { QueryCanceller, type CancelHost } from '../query/cancel'
import { Deadlines } from '../query/deadlines'
import { LeakDetector } from '../telemetry/leak-detector'
import { logSlowQueries } from '../telemetry/slow-query-log'
import { openConnection, openMonitorConnection, openProbeConnection, type ConnectHost } from './connect'

// Everything one knex instance of the plugin shares with the clients of its transactions. knex
// builds a transaction's client from the client class's prototype and copies a handful of
// fields onto it, `config` among them; so the plugin's client methods find their state through
// `config`, never through fields of their own `this`, and a transaction gets every guarantee.
// The pool and query policies below see it through narrow interfaces of their own (AcquireHost,
// CancelHost, …), never as this class.

const RUNTIME = Symbol('fastify-fork-safe-db:runtime')

// At most half the acquire deadline, so a dead connection is replaced within the same deadline.
const MAX_PING_TIMEOUT_MILLIS = 2000

/** What the pool manager is told by a runtime. */
export interface RuntimeEvents {
  /** The server's limits were read on one of this pool's connections (at most once per runtime). */
  serverLimits: (limits: ServerLimits) => void
}

const stockValidate = KnexMySql2Client.prototype.validateConnection

export class ClientRuntime implements AcquireHost, CancelHost, ConnectHost, HealthHost, KeeperHost, ShutdownHost, RetireHost {
  readonly options: ResolvedOptions
  readonly log: FastifyBaseLogger
  /** Which pool this is, in every event it publishes. */
  readonly identity: PoolIdentity
  /** The registration's hosts: which one a new connection goes to, and each one's breaker. */
  readonly hosts: HostSet
  /** What a borrow asks before it waits for a connect: the host set, seen as one breaker. */
  readonly breaker: ConnectGate
  /** `replicaLagFallback`, once resolved at ready(): where queries borrow while every host lags. */
  lagFallback: LagFallback | undefined = undefined
  /** What `stats()` counts of this pool (a subscriber of its events). */
  readonly counters: PoolCounters
  readonly borrowCheck: BorrowCheck
  readonly mayLendDirectly: (connection: DriverConnection) => boolean
  readonly canceller: QueryCanceller
  /** The default query timeout's deadlines, unless it is off. */
  readonly deadlines: Deadlines | undefined
  readonly pingTimeoutMillis: number
  /** `leakDetectionThresholdMillis`: who holds each lent connection, and the warning past the threshold; undefined when off. */
  readonly leaks: LeakDetector | undefined
  /** Connections being opened: a close deadline must reach a connect stuck in a black hole. */
  readonly connecting = new Set<DriverConnection>()
  /** Aborted when the pool is destroyed: a warm-up in progress stops waiting for connections. */
  readonly warmUpStop = new AbortController()
  /** Brings the pool back to pool.min after connections were retired (pool/retire.ts). */
  readonly refill: Refill = new Refill(this)
  /** The knex client this runtime belongs to (set by the client's constructor). */
  client: DialectClient | undefined
  /** Shutdown has begun: the pool opens no new connection (a KILL QUERY still may). */
  closing = false
  /** The close deadline passed: every socket was destroyed; connections close without COM_QUIT. */
  tornDown = false
  serverLimits: ServerLimits | undefined
  /**
   * While set, a query's first borrow waits for the server's limits: a pool whose budget is
   * derived from them must not open connections before it knows its cap.
   */
  needsLimitsFirst = false
  readonly #events: RuntimeEvents
  #learning: Promise<void> | undefined

  constructor (options: ResolvedOptions, log: FastifyBaseLogger, events: RuntimeEvents) {
    this.options = options
    this.log = log
    this.#events = events
    this.identity = Object.freeze({ decorator: options.decorator, pid: process.pid })
    this.counters = countEvents(this.identity)
    this.pingTimeoutMillis = Math.min(MAX_PING_TIMEOUT_MILLIS, Math.max(1, Math.floor(options.pool.acquireTimeoutMillis / 2)))
    this.hosts = new HostSet({
      identity: this.identity,
      log,
      hosts: options.connection.hosts,
      policy: options.hostPolicy,
      role: options.role,
      retirer: this,
      maxReplicaLagSeconds: options.maxReplicaLagSeconds,
      openProbe: (index) => this.client === undefined ? Promise.reject(new Error('no client')) : openProbeConnection(this.client, this, index),
      checkTimeoutMillis: this.pingTimeoutMillis
    })
    this.breaker = this.hosts
    this.borrowCheck = new BorrowCheck({
      checkAfterIdleMillis: options.checkAfterIdleMillis,
      pingAfterIdleMillis: options.pingAfterIdleMillis,
      pingTimeoutMillis: this.pingTimeoutMillis,
      // knex's own in-memory test (mysql2's error and closing flags), after the plugin's.
      looksAlive: (connection) => stockValidate.call(this.client, connection) as boolean
    })
    this.mayLendDirectly = mayLendDirectly(() => this.client, this.borrowCheck)
    this.canceller = new QueryCanceller(this, log)
    this.deadlines = options.queryTimeoutMillis > 0 ? new Deadlines(options.queryTimeoutMillis) : undefined
    const leakThreshold = options.leakDetectionThresholdMillis
    this.leaks = leakThreshold > 0 ? new LeakDetector({ thresholdMillis: leakThreshold, log, hostLabelOf: (connection) => this.hostLabelOf(connection) }) : undefined
    // Stopped with the counts (lifecycle/teardown.ts).
    if (options.slowQueryMillis > 0) logSlowQueries(this.identity, options.slowQueryMillis, log, options.secrets)
  }

  /**
   * A connection for a KILL QUERY of the statement on `target`, to its host: opened even while
   * the pool is closing; by the fallback registration for a connection it lent (its host, not ours).
   */
  openKillConnection (target: DriverConnection): Promise<DriverConnection> | undefined {
    if (this.lagFallback?.owns(target) === true) return this.lagFallback.openKillConnection(target)
    return this.client === undefined ? undefined : openConnection(this.client, this, 'kill', target)
  }

  /** A timed-out statement's KILL could not reach its host: with several hosts, that host is taken out. */
  killFailed (target: DriverConnection, error: unknown): void {
    if (this.lagFallback?.owns(target) === true) return this.lagFallback.killFailed(target, error)
    this.hosts.unreachable(target, error)
  }

  /** The label of the host a connection is connected to (for events). */
  hostLabelOf (connection: DriverConnection): string {
    return this.hosts.labelOf(connection)
  }

  /** The lag guard's connection to host `index`, outside the pool and its breakers, in `opening` while it connects. */
  openHostConnection (index: number, opening: Set<DriverConnection>): Promise<DriverConnection> {
    if (this.client === undefined) return Promise.reject(new Error('the pool is not built'))
    return openMonitorConnection(this.client, this, index, opening)
  }

  /**
   * Reads the server's idle timeout and connection limits on `connection`, once. When they
   * cannot be read, a budget derived from them fails (it would be a guess); otherwise the
   * defaults are assumed and a warning logged.
   */
  async learnServerLimits (connection: DriverConnection): Promise<void> {
    if (this.serverLimits !== undefined) return
    let limits: ServerLimits
    try {
      limits = await readServerLimits(connection)
    } catch (error) {
      if (this.options.budget?.total === 'server') throw error
      this.log.warn({ err: scrubError(error, this.options.secrets) }, 'could not read the server\'s idle timeout and connection limits; assuming the defaults')
      limits = DEFAULT_SERVER_LIMITS
    }
    this.#events.serverLimits(limits)
    this.serverLimits = limits
    this.needsLimitsFirst = false
  }

  /** Borrows one connection to read the server's limits; concurrent first borrows share it. */
  limitsBeforeFirstBorrow (acquire: () => Promise<DriverConnection>, release: (connection: DriverConnection) => Promise<void>): Promise<void> {
    this.#learning ??= (async () => {
      const connection = await acquire()
      try {
        await this.learnServerLimits(connection)
      } finally {
        await release(connection)
      }
    })().finally(() => { this.#learning = undefined })
    return this.#learning
  }

  /**
   * Retires the pool's connections that `which` picks (pool/retire.ts): idle ones are destroyed
   * now, busy ones when released (a transaction finishes first), none is lent again; the pool is
   * refilled to pool.min in the background. Returns how many were retired.
   */
  retire (which: (connection: DriverConnection) => boolean, reason: RetireReason): number {
    const pool = this.client === undefined ? undefined : poolOf(this.client)
    if (pool === undefined) return 0
    const retired = retireConnections(pool, which, reason)
    if (retired > 0) this.refill.request(pool).catch(() => {})
    return retired
  }

  /**
   * A statement on `connection` was answered read-only or not ready: the connection is retired,
   * and the host set decides for its host (a Galera node that is not ready, or a read-only server
   * under a `primary` registration, serves none of this pool's statements: it leaves the
   * rotation, and every connection to it is retired).
   */
  hostRefused (connection: DriverConnection, verdict: Exclude<RoleVerdict, 'ok'>): void {
    // A connection the fallback registration lent: its host, its pool.
    if (this.lagFallback?.owns(connection) === true) return this.lagFallback.hostRefused(connection, verdict)
    this.retire((other) => other === connection, verdict)
    this.hosts.refused(connection, verdict)
  }

  // The runtime sits in knex's config, which people log and inspect: show nothing of it.
  [inspect.custom] (): string {
    return 'ClientRuntime {}'
  }

  toJSON (): string {
    return '[fastify-fork-safe-db runtime]'
  }
}

/** The config entry that carries the runtime into knex (and from there into transactions). */
export function runtimeEntry (runtime: ClientRuntime): { [RUNTIME]: ClientRuntime } {
  return { [RUNTIME]: runtime }
}

/** The runtime of a knex client of the plugin, or of one of its transactions' clients. */
export function runtimeOf (client: { config: object }): ClientRuntime {
  return (client.config as { [RUNTIME]: ClientRuntime })[RUNTIME]
}
