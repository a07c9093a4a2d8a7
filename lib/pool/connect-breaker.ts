import type { FastifyBaseLogger } from 'fastify'
import { FST_FORK_SAFE_DB_UNAVAILABLE } from '../errors'

// While the database is down, every waiting query would trigger its own connect attempt, and
// every request would wait for it. A breaker around opening connections instead:
// - closed (healthy): connects freely, in parallel (warm-up opens several at once);
// - after a failed connect, open for a backoff (100 ms, doubling to 400 ms): no attempt at all,
//   and queries that find no free connection fail at once with FST_FORK_SAFE_DB_UNAVAILABLE;
// - then half-open: a single attempt probes; success closes the breaker, failure reopens it.
// So a process makes at most ~10 attempts a second while the database is down, and is back
// within ~400 ms of the database accepting connections again, with no restart.

const FIRST_BACKOFF_MILLIS = 100
const MAX_BACKOFF_MILLIS = 400

export class ConnectBreaker {
  readonly #decorator: string
  readonly #log: FastifyBaseLogger
  #failures = 0
  #openUntil = 0
  #probing = false
  #lastError: unknown

  constructor (decorator: string, log: FastifyBaseLogger) {
    this.#decorator = decorator
    this.#log = log
  }

  /** True while connect attempts are being held back. */
  isOpen (): boolean {
    return this.#failures > 0 && (this.#probing || performance.now() < this.#openUntil)
  }

  /** The error a query gets while attempts are held back; it names the driver's last error code. */
  unavailable (): Error {
    const code = (this.#lastError as { code?: unknown } | undefined)?.code
    return new FST_FORK_SAFE_DB_UNAVAILABLE(this.#decorator, typeof code === 'string' ? ` (${code})` : '', { cause: this.#lastError })
  }

  /** Runs `connect` unless attempts are held back; records its outcome. */
  async attempt<T> (connect: () => Promise<T>): Promise<T> {
    if (this.isOpen()) throw this.unavailable()
    const probe = this.#failures > 0
    if (probe) this.#probing = true
    try {
      const connection = await connect()
      if (this.#failures > 0) this.#log.info({ failedAttempts: this.#failures }, 'database reachable again')
      this.#failures = 0
      return connection
    } catch (error) {
      this.#failures += 1
      this.#lastError = error
      this.#openUntil = performance.now() + Math.min(MAX_BACKOFF_MILLIS, FIRST_BACKOFF_MILLIS * 2 ** (this.#failures - 1))
      if (this.#failures === 1) this.#log.warn({ err: error }, 'cannot connect to the database; holding connect attempts back')
      // The first failure is reported as the driver said it (warm-up shows it as its cause);
      // a failed probe is part of the outage clients are already being told about.
      throw probe ? this.unavailable() : error
    } finally {
      if (probe) this.#probing = false
    }
  }
}
