// performance from perf_hooks, not the global: on Node 22 the global is an accessor, a getter call
// on every use (bench:instructions found it on the borrow path).
import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import { isAcquireTimeout, poolOf, type ForkSafeTarnPool } from '../driver/tarn-pool'
import type { DialectClient, DriverConnection } from '../driver/types'
import { FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, FST_FORK_SAFE_DB_CLOSED, FST_FORK_SAFE_DB_POOL_SATURATED } from '../errors'
import { codeOf, poolAcquire, poolRelease, type PoolIdentity } from '../events/channels'
import { acquireTrace, traced } from '../events/tracing'
import { classifyConnectError } from '../query/classify-error'
import type { ConnectGate } from './connect-breaker'
import { connectionState } from './connection-state'
import { LagFallback } from './lag-fallback'
import { roundMillis } from './stats'

// A full pool, or a database that is down, must fail fast and clearly, not hang. Waiting queries
// are capped: beyond `maxPendingAcquires` a query is rejected at once, so a slow database turns
// into quick 503s instead of a growing queue of requests that will time out anyway. A wait that
// does time out becomes FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, still a KnexTimeoutError for code
// written against knex. Every borrow is published on `pool:acquire` with its wait, and whether it
// waited for a connect of its own (cold): `stats()` counts those of queries; and traced, while
// anyone subscribes, on the `acquire` tracing channel (events/tracing.ts).
//
// This is knex's acquireConnection as the plugin needs it, on tarn directly: no async wrapper
// around knex's own (it is on every query's path), and a free connection lent without tarn's
// queue when nothing waits for one (direct-borrow.ts).

/** What a borrow needs from the pool's state (the client runtime provides it). */
export interface AcquireHost {
  readonly identity: PoolIdentity
  readonly options: { readonly decorator: string, readonly maxPendingAcquires: number, readonly pool: { readonly acquireTimeoutMillis: number } }
  readonly log: FastifyBaseLogger
  /** Are connects held back (no host can be tried now), and with what error. */
  readonly breaker: ConnectGate
  /** The host a connection is connected to, for the `pool:acquire` event. */
  hostLabelOf: (connection: DriverConnection) => string
  /** The close deadline passed: nothing more is lent. */
  readonly tornDown: boolean
  /** While set, a query's first borrow waits for the server's limits (see client/runtime.ts). */
  readonly needsLimitsFirst: boolean
  limitsBeforeFirstBorrow: (acquire: () => Promise<DriverConnection>, release: (connection: DriverConnection) => Promise<void>) => Promise<void>
  /** Whether a free connection may be lent without tarn's queue (direct-borrow.ts). */
  readonly mayLendDirectly: (connection: DriverConnection) => boolean
  /** `replicaLagFallback`: where a query borrows while every host lags (pool/lag-fallback.ts). */
  readonly lagFallback: LagFallback | undefined
}

/** No free connection, no room to open one, and the queue is full. */
function saturated (pool: ForkSafeTarnPool, maxPendingAcquires: number): boolean {
  return pool.numUsed() + pool.numPendingCreates() >= pool.size.max &&
    pool.numPendingAcquires() >= maxPendingAcquires
}

/**
 * Borrows a connection for `client`. `record`: a query's borrow, counted in the acquire-wait
 * statistics; the plugin's own (warm-up, keeper, health check) are published as internal.
 */
export function acquireGuarded (client: DialectClient, host: AcquireHost, record: boolean): Promise<DriverConnection> {
  if (!acquireTrace.hasSubscribers) return guarded(client, host, record)
  return traced(acquireTrace, { pool: host.identity, internal: !record }, () => guarded(client, host, record), (context, connection, millis) => {
    context.waitMillis = millis
    if (connection === undefined) return
    context.connectionId = connection.threadId
    context.host = host.hostLabelOf(connection)
  })
}

function guarded (client: DialectClient, host: AcquireHost, record: boolean): Promise<DriverConnection> {
  const { decorator, maxPendingAcquires } = host.options
  const pool = poolOf(client)
  if (host.tornDown || pool === undefined) return refused(host, record, new FST_FORK_SAFE_DB_CLOSED(decorator))
  if (pool.numFree() === 0) {
    if (host.breaker.isOpen()) return refusedOrFallback(host, record, host.breaker.unavailable())
    if (saturated(pool, maxPendingAcquires)) return refused(host, record, new FST_FORK_SAFE_DB_POOL_SATURATED(decorator, maxPendingAcquires))
  }
  if (record && host.needsLimitsFirst) {
    return host.limitsBeforeFirstBorrow(() => acquireGuarded(client, host, false), async (connection) => client.releaseConnection(connection))
      .then(() => borrow(pool, host, record))
  }
  return borrow(pool, host, record)
}

/** Every host lags and a fallback is named: a query borrows there instead (off the fast path). */
function refusedOrFallback (host: AcquireHost, record: boolean, error: Error): Promise<DriverConnection> {
  if (record && host.lagFallback !== undefined && LagFallback.covers(error)) return host.lagFallback.borrow()
  return refused(host, record, error)
}

/** A borrow refused before it waited: published as a failed one. */
function refused (host: AcquireHost, record: boolean, error: Error): Promise<never> {
  if (poolAcquire.hasSubscribers) poolAcquire.publish({ pool: host.identity, connectionId: undefined, waitMillis: 0, cold: false, internal: !record, errorCode: codeOf(error) })
  return Promise.reject(error)
}

function borrow (pool: ForkSafeTarnPool, host: AcquireHost, record: boolean): Promise<DriverConnection> {
  const started = performance.now()
  return pool.acquireConnection(host.mayLendDirectly).then(
    (connection) => acquired(host, connection, record, started),
    (error: unknown) => {
      // The free connections were those of a host that lags, and it refused a new one.
      if (record && host.lagFallback !== undefined && LagFallback.covers(error)) return host.lagFallback.borrow()
      throw acquireFailed(host, error, record, started)
    }
  )
}

function acquired (host: AcquireHost, connection: DriverConnection, record: boolean, started: number): DriverConnection {
  // Warm-up and the keeper borrow what they open, so their connections are never cold.
  const state = connectionState(connection)
  const cold = state !== undefined && !state.borrowed
  if (cold) state.borrowed = true
  // A release reports how long its connection was held: the borrow is timed while anyone
  // listens (the release clears it, so an untimed borrow never reports an earlier one's time).
  if (state !== undefined && poolRelease.hasSubscribers) state.lentAt = performance.now()
  const subscribed = poolAcquire.hasSubscribers
  if (!subscribed && !(cold && record)) return connection
  const waitMillis = performance.now() - started
  if (subscribed) poolAcquire.publish({ pool: host.identity, connectionId: connection.threadId, host: host.hostLabelOf(connection), waitMillis, cold, internal: !record })
  if (cold && record) host.log.debug({ waitedMillis: roundMillis(waitMillis) }, 'a query waited for a new connection to be opened (cold acquire)')
  return connection
}

/** A wait that timed out, or a connect that failed (a `pool.afterCreate` lost under it too), coded. */
function acquireFailed (host: AcquireHost, error: unknown, record: boolean, started: number): unknown {
  const { decorator, pool: { acquireTimeoutMillis } } = host.options
  const failure = isAcquireTimeout(error)
    ? new FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT(decorator, acquireTimeoutMillis, { cause: error })
    : classifyConnectError(error, decorator)
  if (poolAcquire.hasSubscribers) {
    poolAcquire.publish({ pool: host.identity, connectionId: undefined, waitMillis: performance.now() - started, cold: false, internal: !record, errorCode: codeOf(failure) })
  }
  return failure
}
