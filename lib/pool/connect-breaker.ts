import type { FastifyBaseLogger } from 'fastify'
import type { DriverConnection } from '../driver/types'
import { FST_FORK_SAFE_DB_UNAVAILABLE } from '../errors'
import { breakerClose, breakerOpen, codeOf, type PoolIdentity } from '../events/channels'
import { connectTrace, traced } from '../events/tracing'
import { classifyConnectError } from '../query/classify-error'
import { OutageLog } from './outage-log'

// While the database is down, every waiting query would trigger its own connect attempt, and
// every request would wait for it. A breaker around opening connections instead:
// - closed (healthy): connects freely, in parallel (warm-up opens several at once);
// - after a failed connect, open for a backoff (100 ms, doubling to 400 ms): no attempt at all,
//   and queries that find no free connection fail at once with FST_FORK_SAFE_DB_UNAVAILABLE;
// - then half-open: a single attempt probes; success closes the breaker, failure reopens it.
// So a process makes at most ~10 attempts a second while the database is down, and is back
// within ~400 ms of the database accepting connections again, with no restart.
// Every failure it reports is coded: the first as what the driver saw (FST_FORK_SAFE_DB_CONNECT_TIMEOUT,
// _CONNECT_REFUSED, or _UNAVAILABLE naming the driver's code), the later ones as
// FST_FORK_SAFE_DB_UNAVAILABLE; the driver error is the `cause` of each. The outage is logged by
// outage-log.ts: once as it begins, in summaries while it lasts, once as it ends; and published
// on the `breaker:open` and `breaker:close` channels. While anyone subscribes, each attempt it lets
// through is traced on the `connect` tracing channel, with the breaker's state (events/tracing.ts).

const FIRST_BACKOFF_MILLIS = 100
const MAX_BACKOFF_MILLIS = 400

/** What a borrow asks of the connect path: are attempts held back, and with what error (a breaker, or a set of hosts). */
export interface ConnectGate {
  isOpen: () => boolean
  unavailable: () => Error
}

export class ConnectBreaker implements ConnectGate {
  readonly #identity: PoolIdentity
  readonly #decorator: string
  readonly #outage: OutageLog
  /** The host it guards: its label is in its events (and in its logs when there are several). */
  readonly #host: { readonly label: string }
  #failures = 0
  #connectFailures = 0
  #openedAt = 0
  #openUntil = 0
  #probing = false
  #lastError: unknown

  constructor (identity: PoolIdentity, log: FastifyBaseLogger, host: { readonly label: string }, nameInLogs = false) {
    this.#identity = identity
    this.#decorator = identity.decorator
    this.#host = host
    this.#outage = new OutageLog(log, nameInLogs ? host : undefined)
  }

  /** An outage is going on: the last connect failed. */
  get failing (): boolean {
    return this.#failures > 0
  }

  /** Connects that failed since the pool was built. */
  get connectFailures (): number {
    return this.#connectFailures
  }

  /** True while connect attempts are being held back. */
  isOpen (): boolean {
    return this.#failures > 0 && (this.#probing || performance.now() < this.#openUntil)
  }

  /** The error a query gets while attempts are held back (counted); it names the driver's last error code. */
  unavailable (): Error {
    this.#outage.failed()
    const code = (this.#lastError as { code?: unknown } | undefined)?.code
    return new FST_FORK_SAFE_DB_UNAVAILABLE(this.#decorator, typeof code === 'string' ? ` (${code})` : '', { cause: this.#lastError })
  }

  /** Runs `connect` unless attempts are held back; records its outcome. */
  async attempt (connect: () => Promise<DriverConnection>): Promise<DriverConnection> {
    if (this.isOpen()) throw this.unavailable()
    if (!connectTrace.hasSubscribers) return this.#attempt(connect)
    const context = { pool: this.#identity, host: this.#host.label, breaker: this.#failures > 0 ? 'half-open' as const : 'closed' as const }
    return traced(connectTrace, context, () => this.#attempt(connect), (traceContext, connection, millis) => {
      traceContext.connectMillis = millis
      if (connection !== undefined) traceContext.connectionId = connection.threadId
    })
  }

  async #attempt (connect: () => Promise<DriverConnection>): Promise<DriverConnection> {
    const probe = this.#failures > 0
    if (probe) this.#probing = true
    try {
      const connection = await connect()
      if (this.#failures > 0) {
        this.#outage.ended(this.#failures)
        if (breakerClose.hasSubscribers) {
          breakerClose.publish({ pool: this.#identity, host: this.#host.label, failedAttempts: this.#failures, outageMillis: performance.now() - this.#openedAt })
        }
      }
      this.#failures = 0
      return connection
    } catch (error) {
      this.#failures += 1
      this.#connectFailures += 1
      this.#lastError = error
      this.#openUntil = performance.now() + Math.min(MAX_BACKOFF_MILLIS, FIRST_BACKOFF_MILLIS * 2 ** (this.#failures - 1))
      if (this.#failures === 1) {
        this.#openedAt = performance.now()
        this.#outage.began(error)
        if (breakerOpen.hasSubscribers) breakerOpen.publish({ pool: this.#identity, host: this.#host.label, errorCode: codeOf(error) })
      }
      // The first failure is reported as what the driver saw (warm-up shows the driver error as
      // its cause); a failed probe is part of the outage clients are already being told about.
      throw probe ? this.unavailable() : this.#firstFailure(error)
    } finally {
      if (probe) this.#probing = false
    }
  }

  /** The pool is closing: the outage's summaries stop, and nothing more is logged. */
  stop (): void {
    this.#outage.stop()
  }

  #firstFailure (error: unknown): unknown {
    const code = (error as { code?: unknown } | undefined)?.code
    // The plugin's own (a driver that changed shape, a closing pool) say what they are.
    if (typeof code === 'string' && code.startsWith('FST_')) return error
    const classified = classifyConnectError(error, this.#decorator)
    if (classified === error) return this.unavailable()
    this.#outage.failed()
    return classified
  }
}
