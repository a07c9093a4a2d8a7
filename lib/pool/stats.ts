// What an operator asks of a pool ("how many connections does each worker hold, how long do
// queries wait for one, did anyone wait for a connect?"). The counts are a subscriber of the
// plugin's channels (events/channels.ts): a connection opened or closed, a query's borrow and its
// wait. Recording is a few additions per borrow; percentiles are computed only when stats are read.

import { subscribe } from 'node:diagnostics_channel'
import type { ForkSafeTarnPool } from '../driver/tarn-pool'
import { channels, type PoolAcquireEvent, type PoolIdentity } from '../events/channels'
import type { ConnectionBudget } from './budget'

// The last 1024 borrows: enough for stable percentiles, small enough to sort on every read.
const WAIT_SAMPLES = 1024

export interface AcquireWaitStats {
  /** Borrows in the window the percentiles are computed over (the most recent, at most 1024). */
  samples: number
  p50: number
  p95: number
  p99: number
  max: number
}

export interface ColdAcquireStats {
  /** Queries that had to wait for a new connection to be opened: the cost warm-up removes. */
  count: number
  totalWaitMillis: number
  maxWaitMillis: number
}

export class PoolCounters {
  created = 0
  destroyed = 0
  readonly #waits = new Float64Array(WAIT_SAMPLES)
  #recorded = 0
  readonly cold: ColdAcquireStats = { count: 0, totalWaitMillis: 0, maxWaitMillis: 0 }

  /** A query borrowed a connection after `waitMillis`; `cold` when it was opened for it. */
  recordAcquire (waitMillis: number, cold: boolean): void {
    this.#waits[this.#recorded % WAIT_SAMPLES] = waitMillis
    this.#recorded += 1
    if (!cold) return
    this.cold.count += 1
    this.cold.totalWaitMillis += waitMillis
    this.cold.maxWaitMillis = Math.max(this.cold.maxWaitMillis, waitMillis)
  }

  acquireWaits (): AcquireWaitStats {
    const samples = Math.min(this.#recorded, WAIT_SAMPLES)
    const sorted = this.#waits.slice(0, samples).sort()
    const at = (fraction: number) => samples === 0 ? 0 : roundMillis(sorted[Math.min(samples - 1, Math.ceil(fraction * samples) - 1)])
    return { samples, p50: at(0.5), p95: at(0.95), p99: at(0.99), max: samples === 0 ? 0 : roundMillis(sorted[samples - 1]) }
  }

  coldAcquires (): ColdAcquireStats {
    return { count: this.cold.count, totalWaitMillis: roundMillis(this.cold.totalWaitMillis), maxWaitMillis: roundMillis(this.cold.maxWaitMillis) }
  }
}

// One subscriber per channel for every pool of the process, each pool's counters found by its
// identity (a Map lookup, not a subscriber per pool that would hear every other pool's events).
const counted = new Map<PoolIdentity, PoolCounters>()
let subscribed = false

function onAcquire (message: unknown): void {
  const event = message as PoolAcquireEvent
  if (event.internal || event.connectionId === undefined) return
  counted.get(event.pool)?.recordAcquire(event.waitMillis, event.cold)
}

function onConnect (message: unknown): void {
  const counters = counted.get((message as { pool: PoolIdentity }).pool)
  if (counters !== undefined) counters.created += 1
}

function onDestroy (message: unknown): void {
  const counters = counted.get((message as { pool: PoolIdentity }).pool)
  if (counters !== undefined) counters.destroyed += 1
}

/** Counts the events of the pool `identity` from now on. */
export function countEvents (identity: PoolIdentity): PoolCounters {
  if (!subscribed) {
    subscribe(channels.poolAcquire, onAcquire)
    subscribe(channels.poolConnect, onConnect)
    subscribe(channels.poolDestroy, onDestroy)
    subscribed = true
  }
  const counters = new PoolCounters()
  counted.set(identity, counters)
  return counters
}

/** The pool is gone (closed, or left to the process that built it): its counts are dropped. */
export function stopCounting (identity: PoolIdentity): void {
  counted.delete(identity)
}

/** Milliseconds to three decimals: microsecond precision, readable JSON. */
export function roundMillis (millis: number): number {
  return Math.round(millis * 1000) / 1000
}

/** `new`: not built in this process yet; `warming`; `open`; `closing`: close() began; `closed`. */
export type PoolState = 'new' | 'warming' | 'open' | 'closing' | 'closed'

export interface ConnectionStats {
  /** Lent out to queries right now. */
  used: number
  /** Open and idle in the pool. */
  free: number
  /** Queries waiting for a connection. */
  pendingAcquires: number
  /** Connections being opened. */
  pendingCreates: number
  min: number
  max: number
  /** Opened since this process built its pool. */
  created: number
  /** Closed since this process built its pool. */
  destroyed: number
}

/** Why a host is in or out of rotation (the same words as hosts/host.ts's HostState, a layer above). */
export type HostStatsState = 'up' | 'down' | 'read-only' | 'not-ready' | 'lagging'

/** One host of the registration, in `stats().hosts` (one entry with one host). */
export interface HostStats {
  /** `host:port`, or the socket path. */
  host: string
  /** `up`: in rotation; `down`: its connects fail; `read-only`, `not-ready`, `lagging`: its role or lag keeps it out. */
  state: HostStatsState
  /** Pool connections open to it now. */
  connections: number
  /** Connects to it that failed since this process built its pool. */
  failures: number
  /** Of its connections, those lent out now. */
  inUse: number
  /**
   * With a lag guard (`maxReplicaLagSeconds`): its last reading, seconds behind the primary,
   * `null` while the host is not replicating (its SQL or IO thread stopped); absent before the
   * first reading.
   */
  lagSeconds?: number | null
}

/** A connection lent out now, and who borrowed it: `stats().holders`. */
export interface ConnectionHolder {
  connectionId: number | null
  /** `host:port`, or the socket path. */
  host: string
  /** How long it has been lent, in milliseconds. */
  heldMillis: number
  /** The borrowing request's id; undefined for `fastify.db` outside a request. */
  requestId: string | undefined
  /** The borrowing request's route (`GET /users/:id`); undefined outside a request. */
  route: string | undefined
  /** The stack of the code that borrowed it (captured only while `leakDetectionThresholdMillis` is on). */
  stack: string | undefined
}

/** What `fastify.dbPool.stats()` returns: this process's pool, all counts from this process only. */
export interface ForkSafeDbStats {
  pid: number
  decorator: string
  state: PoolState
  /** Warm-up completed in this process. */
  warm: boolean
  /** Pools built after a pid change (a fork or snapshot restore of a process that had one). */
  rebuilds: number
  connections: ConnectionStats
  /** How long queries waited to borrow a connection, in milliseconds. */
  acquireWaitMillis: AcquireWaitStats
  coldAcquires: ColdAcquireStats
  /** The connection budget as applied at warm-up, if one is configured. */
  budget: ConnectionBudget | undefined
  /** Each host of the registration, in order: its state, its connections, its failed connects. */
  hosts: HostStats[]
  /** Who holds each lent connection, longest held first; filled while `leakDetectionThresholdMillis` is on, else empty. */
  holders: ConnectionHolder[]
}

/** The connection counts and timings of a pool, or zeros when there is none in this process. */
export function describePool (pool: ForkSafeTarnPool | undefined, counters: PoolCounters | undefined): Pick<ForkSafeDbStats, 'connections' | 'acquireWaitMillis' | 'coldAcquires'> {
  const source = counters ?? new PoolCounters()
  const size = pool === undefined ? { min: 0, max: 0 } : pool.size
  return {
    connections: {
      used: pool?.numUsed() ?? 0,
      free: pool?.numFree() ?? 0,
      pendingAcquires: pool?.numPendingAcquires() ?? 0,
      pendingCreates: pool?.numPendingCreates() ?? 0,
      min: size.min,
      max: size.max,
      created: source.created,
      destroyed: source.destroyed
    },
    acquireWaitMillis: source.acquireWaits(),
    coldAcquires: source.coldAcquires()
  }
}
