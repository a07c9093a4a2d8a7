import type { FastifyBaseLogger } from 'fastify'

// While the database cannot be reached, every request that needs a new connection fails, and
// each already gets its own 5xx line from Fastify (or the app's error handler). The plugin adds
// only what no single request can say: one line when the outage begins, a summary at most every
// few seconds while it lasts (how many borrows failed), and one line when it ends. The summary's
// timer is unref'ed, and stop() (the pool's close) clears it and silences the rest.

const SUMMARY_EVERY_MILLIS = 5000

export class OutageLog {
  readonly #log: FastifyBaseLogger
  #timer: NodeJS.Timeout | undefined
  #began = 0
  /** Borrows that failed since the last summary, and since the outage began. */
  #failedSinceSummary = 0
  #failed = 0
  #stopped = false
  /** With several hosts, the host whose outage this is: named in every line. */
  readonly #host: { readonly label: string } | undefined

  constructor (log: FastifyBaseLogger, host?: { readonly label: string }) {
    this.#log = log
    this.#host = host
  }

  /** ` host h1:3306` with several hosts; nothing with one (its lines stay as they were). */
  get #which (): string {
    return this.#host === undefined ? '' : ` host ${this.#host.label}`
  }

  #fields (fields: Record<string, unknown>): Record<string, unknown> {
    return this.#host === undefined ? fields : { host: this.#host.label, ...fields }
  }

  /** The first connect failed: the outage begins. */
  began (error: unknown): void {
    if (this.#stopped) return
    this.#began = performance.now()
    this.#log.warn(this.#fields({ err: error }), `cannot connect to the database${this.#which}; holding connect attempts back`)
    clearInterval(this.#timer)
    this.#timer = setInterval(() => this.#summarize(), SUMMARY_EVERY_MILLIS)
    this.#timer.unref()
  }

  /** A borrow failed because the database cannot be reached. */
  failed (): void {
    this.#failedSinceSummary += 1
    this.#failed += 1
  }

  /** A connect succeeded after `failedAttempts` failed ones: the outage is over. */
  ended (failedAttempts: number): void {
    clearInterval(this.#timer)
    this.#timer = undefined
    if (!this.#stopped) {
      this.#log.info(this.#fields({ failedAttempts, failedBorrows: this.#failed, outageMillis: Math.round(performance.now() - this.#began) }), `database${this.#which} reachable again`)
    }
    this.#failed = 0
    this.#failedSinceSummary = 0
  }

  /** The pool is closing: no timer and no line from now on. */
  stop (): void {
    this.#stopped = true
    clearInterval(this.#timer)
    this.#timer = undefined
  }

  #summarize (): void {
    if (this.#failedSinceSummary === 0) return
    this.#log.warn(this.#fields({
      failedBorrows: this.#failedSinceSummary,
      failedBorrowsInOutage: this.#failed,
      outageMillis: Math.round(performance.now() - this.#began)
    }), `database${this.#which} still unreachable: ${this.#failedSinceSummary} borrows failed in the last ${SUMMARY_EVERY_MILLIS / 1000} s`)
    this.#failedSinceSummary = 0
  }
}
