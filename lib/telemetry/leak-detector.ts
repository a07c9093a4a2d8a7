import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import type { DriverConnection } from '../driver/types'
import { connectionState } from '../pool/connection-state'
import { roundMillis, type ConnectionHolder } from '../pool/stats'
import { ownerOf } from '../query/owners'
import { borrowStackOf } from './borrow-site'

// `leakDetectionThresholdMillis`, after HikariCP's leakDetectionThreshold: a connection lent
// longer than the threshold is reported once, with the stack of the code that borrowed it, its
// route and request id; if it comes back later, one line says so. Nothing is reclaimed: a long
// transaction may be legitimate, and taking its connection away would break it.
//
// The holders are kept in the order they were lent (a Map keeps insertion order), so the first
// one not yet reported is the next to cross the threshold: one timer per pool, armed for that
// moment, instead of a timer per borrow. A holder is recorded by what borrowed (a statement's
// runner, or a transaction's BEGIN: see client/leak-tracking-client.ts) in the borrow's own turn;
// its request id, route and stack are read only when it is reported or listed.

/** What the detector needs of its pool. */
export interface LeakDetectorHost {
  readonly thresholdMillis: number
  readonly log: FastifyBaseLogger
  /** The label of the host a connection is connected to (`host:port` or the socket path). */
  hostLabelOf: (connection: DriverConnection) => string
}

interface Holder {
  readonly connection: DriverConnection
  /** performance.now() when it was lent. */
  readonly since: number
  /** What borrowed it: a builder or raw (with its client), or a transaction's client. */
  readonly source: object
  readonly client: object
  reported: boolean
}

export class LeakDetector {
  readonly #host: LeakDetectorHost
  readonly #holders = new Map<DriverConnection, Holder>()
  #timer: NodeJS.Timeout | undefined
  #stopped = false

  constructor (host: LeakDetectorHost) {
    this.#host = host
  }

  /**
   * The lent `connection` runs a statement of `source` (a builder on `client`, or a transaction's
   * client): the first one named is its borrower, held from now (the borrow's own turn) until
   * `returned`. A connection the plugin did not open (the user's own, passed to `.connection()`)
   * is not held: nothing would give it back.
   */
  heldBy (connection: DriverConnection, source: object, client: object): void {
    if (this.#holders.has(connection) || connectionState(connection) === undefined) return
    this.#holders.set(connection, { connection, since: performance.now(), source, client, reported: false })
    if (this.#timer === undefined && !this.#stopped) this.#arm(this.#host.thresholdMillis)
  }

  /** `connection` went back to the pool. */
  returned (connection: DriverConnection): void {
    const holder = this.#holders.get(connection)
    if (holder === undefined) return
    this.#holders.delete(connection)
    if (!holder.reported) return
    const { stack: _stack, ...described } = this.#describe(holder, performance.now())
    this.#host.log.info(described, 'a connection reported as a possible leak came back to the pool (unleaked)')
  }

  /** The connections lent now, longest held first. */
  holders (): ConnectionHolder[] {
    const now = performance.now()
    return Array.from(this.#holders.values(), (holder) => this.#describe(holder, now))
  }

  /** The pool is closing or abandoned: no more reports (returns are still heard). */
  stop (): void {
    this.#stopped = true
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #arm (millis: number): void {
    // Node may run a timer a fraction of a millisecond before performance.now() says it is due:
    // the sweep then re-arms for the rest.
    this.#timer = setTimeout(() => this.#sweep(), Math.max(1, Math.ceil(millis)))
    this.#timer.unref()
  }

  #sweep (): void {
    this.#timer = undefined
    if (this.#stopped) return
    const now = performance.now()
    const { thresholdMillis } = this.#host
    for (const holder of this.#holders.values()) {
      if (holder.reported) continue
      const due = holder.since + thresholdMillis
      if (due > now) {
        this.#arm(due - now)
        return
      }
      holder.reported = true
      this.#report(holder, now)
    }
  }

  #report (holder: Holder, now: number): void {
    this.#host.log.warn(
      { ...this.#describe(holder, now), thresholdMillis: this.#host.thresholdMillis },
      'connection leak detection triggered: a connection has been held longer than leakDetectionThresholdMillis (the borrower\'s stack is in `stack`)'
    )
  }

  #describe (holder: Holder, now: number): ConnectionHolder {
    const owner = ownerOf(holder.source, holder.client)
    return {
      connectionId: holder.connection.threadId,
      host: this.#host.hostLabelOf(holder.connection),
      heldMillis: roundMillis(now - holder.since),
      requestId: owner?.requestId,
      route: owner?.route,
      stack: borrowStackOf(holder.source)
    }
  }
}
