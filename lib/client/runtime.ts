import { inspect } from 'node:util'
import type { FastifyBaseLogger } from 'fastify'
import { KnexMySql2Client } from '../driver/knex-parts'
import { poolOf } from '../driver/tarn-pool'
import type { DialectClient, DriverConnection } from '../driver/types'
import type { PoolIdentity } from '../events/channels'
import { LaggingHostBreaker, type LagHostSet } from '../hosts/lag-host-set'
import { openLagMonitorConnection } from '../hosts/lag-monitor-connection'
import { scrubError } from '../logging/redact'
import type { ResolvedOptions } from '../options/resolve-options'
import type { AcquireHost } from '../pool/acquire-guard'
import { BorrowCheck } from '../pool/borrow-check'
import { ConnectBreaker } from '../pool/connect-breaker'
import { mayLendDirectly } from '../pool/direct-borrow'
import type { HealthHost } from '../pool/health'
import type { KeeperHost } from '../pool/idle-keeper'
import type { LagFallback } from '../pool/lag-fallback'
import { DEFAULT_SERVER_LIMITS, readServerLimits, type ServerLimits } from '../pool/server-limits'
import type { ShutdownHost } from '../pool/shutdown'
import { countEvents, type PoolCounters } from '../pool/stats'
import { QueryCanceller, type CancelHost } from '../query/cancel'
import { Deadlines } from '../query/deadlines'
import { openConnection, type ConnectHost } from './connect'

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

export class ClientRuntime implements AcquireHost, CancelHost, ConnectHost, HealthHost, KeeperHost, ShutdownHost {
  readonly options: ResolvedOptions
  readonly log: FastifyBaseLogger
  /** Which pool this is, in every event it publishes. */
  readonly identity: PoolIdentity
  readonly breaker: ConnectBreaker
  /** The hosts the lag guard watches (`maxReplicaLagSeconds`); undefined without a guard. */
  readonly hostSet: LagHostSet | undefined
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
  /** Connections being opened: a close deadline must reach a connect stuck in a black hole. */
  readonly connecting = new Set<DriverConnection>()
  /** Aborted when the pool is destroyed: a warm-up in progress stops waiting for connections. */
  readonly warmUpStop = new AbortController()
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
    if (options.maxReplicaLagSeconds === undefined) {
      this.breaker = new ConnectBreaker(this.identity, log)
      this.hostSet = undefined
    } else {
      const breaker = new LaggingHostBreaker(this.identity, log, hostLabel(options), options.maxReplicaLagSeconds, {
        idle: () => (this.client === undefined ? undefined : poolOf(this.client))?.idleConnections() ?? [],
        busy: () => (this.client === undefined ? undefined : poolOf(this.client))?.borrowedConnections() ?? []
      })
      this.breaker = breaker
      this.hostSet = breaker
    }
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
  }

  /**
   * A connection for a KILL QUERY of `connection`'s statement: opened even while the pool is
   * closing; by the fallback registration for a connection it lent (its host, not ours).
   */
  openKillConnection (connection: DriverConnection): Promise<DriverConnection> | undefined {
    if (this.lagFallback?.owns(connection) === true) return this.lagFallback.openKillConnection(connection)
    return this.client === undefined ? undefined : openConnection(this.client, this, 'kill')
  }

  /** The lag guard's connection to host `index`, outside the pool (one host until HostSet is wired). */
  openHostConnection (_index: number): Promise<DriverConnection> {
    if (this.client === undefined) return Promise.reject(new Error('the pool is not built'))
    return openLagMonitorConnection(this.client)
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

  // The runtime sits in knex's config, which people log and inspect: show nothing of it.
  [inspect.custom] (): string {
    return 'ClientRuntime {}'
  }

  toJSON (): string {
    return '[fastify-fork-safe-db runtime]'
  }
}

/** `host:port` (or the socket path) of a one-host registration: safe for logs. */
function hostLabel (options: ResolvedOptions): string {
  const settings = options.connection.knex
  if (typeof settings === 'function') return 'the connection function\'s host'
  return settings.socketPath ?? `${settings.host ?? 'localhost'}:${settings.port ?? 3306}`
}

/** The config entry that carries the runtime into knex (and from there into transactions). */
export function runtimeEntry (runtime: ClientRuntime): { [RUNTIME]: ClientRuntime } {
  return { [RUNTIME]: runtime }
}

/** The runtime of a knex client of the plugin, or of one of its transactions' clients. */
export function runtimeOf (client: { config: object }): ClientRuntime {
  return (client.config as { [RUNTIME]: ClientRuntime })[RUNTIME]
}
