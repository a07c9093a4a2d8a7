import type { DriverConnection } from '../driver/types'
import { factsOf, hostAttributes, type HostFacts } from './host-attributes'
import type { Instruments } from './instruments'
import { operationName } from './operation-name'
import type { BatchObservableResultLike, MetricAttributes } from './otel-api'
import { ATTRIBUTE } from './semconv'

// One pool's metrics: what its events record (create, wait and use times, acquire timeouts,
// statements' durations) and what a collection reads from the pool itself (connections per
// host and state, the bounds, the queue: exact, as stats() counts them). Attributes are built
// once per host (and per verb and error code for statements), not per event.

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
  readonly #pool: MeteredPool
  /** Per host label, once its system is known (a connection to it was opened). */
  readonly #hosts = new Map<string, HostEntry>()
  readonly #operations = new Map<string, MetricAttributes>()
  /** Connections lent to the plugin's own borrows (warm-up, keeper, health check): their release is not a use. */
  readonly #internal = new Set<number | null>()

  constructor (instruments: Instruments, poolName: string, pool: MeteredPool) {
    this.#instruments = instruments
    this.#poolName = poolName
    this.#pool = pool
  }

  /** A host's entry; while none of its connections has been seen, attributes without system and namespace (not kept). */
  #host (label: string): HostEntry {
    const known = this.#hosts.get(label)
    if (known !== undefined) return known
    const connection = this.#pool.connectionTo(label)
    const facts = connection === undefined ? undefined : factsOf(connection)
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
   * system and namespace their connections agree on.
   */
  #poolWide (): MetricAttributes {
    const hosts = this.#pool.hosts()
    if (hosts.length === 1) return this.#host(hosts[0].host).attributes
    const attributes: Record<string, string | number> = { [ATTRIBUTE.poolName]: this.#poolName }
    const facts = hosts.map((row) => this.#host(row.host).facts).filter((one): one is HostFacts => one !== undefined)
    const system = facts[0]?.system
    if (system !== undefined && facts.every((one) => one.system === system)) attributes[ATTRIBUTE.system] = system
    const namespace = facts[0]?.namespace
    if (namespace !== undefined && facts.every((one) => one.namespace === namespace)) attributes[ATTRIBUTE.namespace] = namespace
    return attributes
  }

  connected (host: string, connectMillis: number): void {
    this.#instruments.createTime.record(connectMillis / MILLIS_PER_SECOND, this.#host(host).attributes)
  }

  acquired (host: string, waitMillis: number): void {
    this.#instruments.waitTime.record(waitMillis / MILLIS_PER_SECOND, this.#host(host).attributes)
  }

  /** The plugin lent `connectionId` to itself: neither its wait nor its use is the application's. */
  lentInternally (connectionId: number | null): void {
    // A connection the plugin borrowed and then destroyed (a failed ping) is never released:
    // the set is bounded rather than tracked through destroys (the plugin's borrows are few).
    if (this.#internal.size >= MAX_INTERNAL_BORROWS) this.#internal.clear()
    this.#internal.add(connectionId)
  }

  timedOut (): void {
    this.#instruments.timeouts.add(1, this.#poolWide())
  }

  released (host: string, connectionId: number | null, heldMillis: number): void {
    if (this.#internal.size > 0 && this.#internal.delete(connectionId)) return
    this.#instruments.useTime.record(heldMillis / MILLIS_PER_SECOND, this.#host(host).attributes)
  }

  /** A statement ended: its duration, by host, SQL verb and (on failure) error code. */
  queried (host: string, method: string | undefined, sql: string, durationMillis: number, errorCode: string | undefined): void {
    const operation = operationName(method, sql)
    const key = `${host}\u0000${operation ?? ''}\u0000${errorCode ?? ''}`
    let attributes = this.#operations.get(key)
    if (attributes === undefined) {
      const base = this.#host(host)
      const built: Record<string, string | number> = { ...base.attributes }
      if (operation !== undefined) built[ATTRIBUTE.operation] = operation
      if (errorCode !== undefined) built[ATTRIBUTE.errorType] = errorCode
      attributes = Object.freeze(built)
      // Kept once the host's system is known, so the first statements do not pin a partial set.
      if (base.facts?.system !== undefined) this.#operations.set(key, attributes)
    }
    this.#instruments.operationDuration.record(durationMillis / MILLIS_PER_SECOND, attributes)
  }

  /** The collection's reading of the pool: connections per host and state, bounds, the queue. */
  observe (result: BatchObservableResultLike): void {
    const instruments = this.#instruments
    for (const row of this.#pool.hosts()) {
      const host = this.#host(row.host)
      result.observe(instruments.count, row.connections - row.inUse, host.asIdle)
      result.observe(instruments.count, row.inUse, host.asUsed)
    }
    const size = this.#pool.size()
    const attributes = this.#poolWide()
    // tarn keeps idle connections up to pool.max (until idleTimeoutMillis) and down to pool.min.
    result.observe(instruments.idleMax, size.max, attributes)
    result.observe(instruments.idleMin, size.min, attributes)
    result.observe(instruments.max, size.max, attributes)
    result.observe(instruments.pendingRequests, size.waiting, attributes)
  }
}
