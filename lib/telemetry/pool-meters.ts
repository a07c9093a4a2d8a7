import type { DriverConnection } from '../driver/types'
import { factsOf, hostAttributes, type HostFacts } from './host-attributes'
import type { Instruments } from './instruments'
import { operationName } from './operation-name'
import type { BatchObservableResultLike, MetricAttributes } from './otel-api'
import { ATTRIBUTE, OTHER_ERROR } from './semconv'

// One pool's metrics: what its events record (create, wait and use times, acquire timeouts,
// statements' durations) and what a collection reads from the pool itself (connections per
// host and state, the bounds, the queue: exact, as stats() counts them). Attributes are built
// once per host (and per verb and error code for statements), not per event.

/** How a statement failed, as its `query:end` says. */
export interface StatementFailure {
  /** The error's code, if it has one. */
  readonly code: string | undefined
  /** The server's error number, if the server answered with an error. */
  readonly number: number | undefined
}

/** What the metrics read from a pool at collection time (the lifecycle provides it). */
export interface MeteredPool {
  /** Each host of the registration now: its label, its open connections, those lent out. */
  hosts: () => ReadonlyArray<{ readonly host: string, readonly connections: number, readonly inUse: number }>
  /** The pool's bounds and the borrows waiting for a connection now. */
  size: () => { min: number, max: number, waiting: number }
  /** A connection of the pool open to `host` now, to read what its handshake said. */
  connectionTo: (host: string) => DriverConnection | undefined
}

const MILLIS_PER_SECOND = 1000
const MAX_INTERNAL_BORROWS = 64

interface HostEntry {
  /** What its handshake said; undefined until a connection to it was seen. */
  readonly facts: HostFacts | undefined
  readonly attributes: MetricAttributes
  /** With `db.client.connection.state`, for the connection count. */
  readonly asIdle: MetricAttributes
  readonly asUsed: MetricAttributes
}

export class PoolMeters {
  readonly #instruments: Instruments
  readonly #poolName: string
  readonly #operationFromText: boolean
  readonly #pool: MeteredPool
  /** Per host label, once its system is known (a connection to it was opened). */
  readonly #hosts = new Map<string, HostEntry>()
  readonly #operations = new Map<string, MetricAttributes>()
  /**
   * Connections lent to the plugin's own borrows (warm-up, keeper, health check), by host and
   * thread id (two servers number their threads alike): their release is not a use.
   */
  readonly #internal = new Set<string>()
  /** The pool-wide attributes, fixed once a host is known. */
  #poolAttributes: MetricAttributes | undefined

  constructor (instruments: Instruments, poolName: string, pool: MeteredPool, operationFromText = true) {
    this.#instruments = instruments
    this.#poolName = poolName
    this.#operationFromText = operationFromText
    this.#pool = pool
  }

  /**
   * A host's entry, once its system is known: learnt from its first `pool:connect` (which
   * carries the handshake's facts), or read from a connection of the pool to it. Until then,
   * attributes without system and namespace, not kept (only an event that raced the first
   * connect's would use them).
   */
  #host (label: string): HostEntry {
    return this.#hosts.get(label) ?? this.#learn(label, this.#connectionFacts(label))
  }

  #connectionFacts (label: string): HostFacts | undefined {
    const connection = this.#pool.connectionTo(label)
    return connection === undefined ? undefined : factsOf(connection)
  }

  #learn (label: string, facts: HostFacts | undefined): HostEntry {
    const attributes = hostAttributes(this.#poolName, label, facts)
    const entry: HostEntry = {
      facts,
      attributes,
      asIdle: Object.freeze({ ...attributes, [ATTRIBUTE.state]: 'idle' }),
      asUsed: Object.freeze({ ...attributes, [ATTRIBUTE.state]: 'used' })
    }
    if (facts?.system !== undefined) this.#hosts.set(label, entry)
    return entry
  }

  /**
   * The attributes of what belongs to the pool rather than one host (its bounds, its queue, a
   * timed-out borrow): with one host, that host's; with several, the pool's name with the
   * system and namespace of the first host known. Fixed once known: an observation under a
   * set of attributes that later grows would stay in a cumulative reader's export beside the
   * full set, with its last value, for the life of the process. Undefined before any host is known.
   */
  #poolWide (): MetricAttributes | undefined {
    if (this.#poolAttributes !== undefined) return this.#poolAttributes
    const hosts = this.#pool.hosts()
    const known = hosts.map((row) => this.#host(row.host)).find((entry) => entry.facts?.system !== undefined)
    if (known === undefined) return undefined
    if (hosts.length === 1) {
      this.#poolAttributes = known.attributes
    } else {
      const attributes: Record<string, string | number> = { [ATTRIBUTE.poolName]: this.#poolName }
      if (known.facts?.system !== undefined) attributes[ATTRIBUTE.system] = known.facts.system
      if (known.facts?.database !== undefined) attributes[ATTRIBUTE.namespace] = known.facts.database
      this.#poolAttributes = Object.freeze(attributes)
    }
    return this.#poolAttributes
  }

  /** A connection to `host` was opened: its handshake's facts name the host from now on. */
  connected (host: string, connectMillis: number, facts: HostFacts): void {
    const entry = this.#hosts.get(host) ?? this.#learn(host, facts)
    this.#instruments.createTime.record(connectMillis / MILLIS_PER_SECOND, entry.attributes)
  }

  acquired (host: string, waitMillis: number): void {
    this.#instruments.waitTime.record(waitMillis / MILLIS_PER_SECOND, this.#host(host).attributes)
  }

  /** The plugin lent `connectionId` to itself: neither its wait nor its use is the application's. */
  lentInternally (host: string, connectionId: number | null): void {
    // A connection the plugin borrowed and then destroyed (a failed ping) is never released:
    // the set is bounded rather than tracked through destroys (the plugin's borrows are few).
    if (this.#internal.size >= MAX_INTERNAL_BORROWS) this.#internal.clear()
    this.#internal.add(internalKey(host, connectionId))
  }

  timedOut (): void {
    // Before any connect succeeded (the database down from the start), the pool's name alone.
    this.#instruments.timeouts.add(1, this.#poolWide() ?? { [ATTRIBUTE.poolName]: this.#poolName })
  }

  released (host: string, connectionId: number | null, heldMillis: number): void {
    if (this.#internal.size > 0 && this.#internal.delete(internalKey(host, connectionId))) return
    this.#instruments.useTime.record(heldMillis / MILLIS_PER_SECOND, this.#host(host).attributes)
  }

  /**
   * A statement ended: its duration, by host, SQL verb and, on failure, `error.type` (its code,
   * `_OTHER` without one) and `db.response.status_code` (the server's error number, as a string).
   */
  queried (host: string, method: string | undefined, sql: string, durationMillis: number, failure: StatementFailure | undefined): void {
    const operation = operationName(method, sql, this.#operationFromText)
    const errorType = failure === undefined ? undefined : failure.code ?? OTHER_ERROR
    const statusCode = failure?.number === undefined ? undefined : String(failure.number)
    const key = `${host}\u0000${operation ?? ''}\u0000${errorType ?? ''}\u0000${statusCode ?? ''}`
    let attributes = this.#operations.get(key)
    if (attributes === undefined) {
      const base = this.#host(host)
      const built: Record<string, string | number> = { ...base.attributes }
      if (operation !== undefined) built[ATTRIBUTE.operation] = operation
      if (errorType !== undefined) built[ATTRIBUTE.errorType] = errorType
      if (statusCode !== undefined) built[ATTRIBUTE.statusCode] = statusCode
      attributes = Object.freeze(built)
      // Kept once the host's system is known, so the first statements do not pin a partial set.
      if (base.facts?.system !== undefined) this.#operations.set(key, attributes)
    }
    this.#instruments.operationDuration.record(durationMillis / MILLIS_PER_SECOND, attributes)
  }

  /**
   * The collection's reading of the pool: connections per host and state, bounds, the queue.
   * A host not known yet (never connected) and, before any host is, the pool-wide gauges are
   * left out: a gauge observed under partial attributes would be exported, stuck at its last
   * value, beside the full set for the rest of the process.
   */
  observe (result: BatchObservableResultLike): void {
    const instruments = this.#instruments
    for (const row of this.#pool.hosts()) {
      const host = this.#host(row.host)
      if (host.facts?.system === undefined) continue
      result.observe(instruments.count, row.connections - row.inUse, host.asIdle)
      result.observe(instruments.count, row.inUse, host.asUsed)
    }
    const attributes = this.#poolWide()
    if (attributes === undefined) return
    const size = this.#pool.size()
    // tarn keeps idle connections up to pool.max (until idleTimeoutMillis) and down to pool.min.
    result.observe(instruments.idleMax, size.max, attributes)
    result.observe(instruments.idleMin, size.min, attributes)
    result.observe(instruments.max, size.max, attributes)
    result.observe(instruments.pendingRequests, size.waiting, attributes)
  }
}

function internalKey (host: string, connectionId: number | null): string {
  return `${host}\u0000${connectionId ?? ''}`
}
