// The default query timeout, without a timer per statement. Every statement that gets the
// default has the same limit, so deadlines come in the order statements start: a FIFO queue
// with one timer, armed for its head, is all it takes. (A timer per statement means, when
// statements run one at a time, that Node builds and tears down its timer list for every query:
// bench:instructions counted that on every statement that gets the default timeout.)
// A statement that ends is marked done in O(1) and leaves the queue when it reaches the head;
// a long-running head cannot make the queue grow without bound: done entries are compacted away.
// An emptied queue keeps its array (with one statement at a time it empties after every
// statement): the next statement reuses the slot instead of allocating a new array.

// performance from perf_hooks, not the global: on Node 22 the global is an accessor, a getter call
// on every use (bench:instructions found it on the borrow path).
import { performance } from 'node:perf_hooks'

const COMPACT_AT = 4096

export interface Deadline {
  done: boolean
}

interface Entry extends Deadline {
  at: number
  expire: () => void
}

export class Deadlines {
  readonly #millis: number
  /** Slots before #head and from #tail on hold nothing (undefined or not there). */
  #entries: Array<Entry | undefined> = []
  #head = 0
  #tail = 0
  #compactAt = COMPACT_AT
  #timer: NodeJS.Timeout | undefined

  constructor (millis: number) {
    this.#millis = millis
  }

  /** Calls `expire` `millis` from now unless `end()` is called for the returned deadline first. */
  start (expire: () => void): Deadline {
    const entry: Entry = { at: performance.now() + this.#millis, expire, done: false }
    if (this.#tail < this.#entries.length) this.#entries[this.#tail] = entry
    else this.#entries.push(entry)
    this.#tail += 1
    if (this.#timer === undefined) this.#arm(this.#millis)
    if (this.#tail - this.#head >= this.#compactAt) this.#compact()
    return entry
  }

  /** The statement ended: its deadline no longer applies. */
  end (deadline: Deadline): void {
    deadline.done = true
    const entries = this.#entries
    while (this.#head < this.#tail && (entries[this.#head] as Entry).done) entries[this.#head++] = undefined
    if (this.#head === this.#tail) this.#head = this.#tail = 0
  }

  /** Entries still queued (ended ones included until they are dropped). */
  get queued (): number {
    return this.#tail - this.#head
  }

  /** Stops the timer (the pool is gone); pending deadlines never fire. */
  stop (): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#entries = []
    this.#head = this.#tail = 0
  }

  #arm (millis: number): void {
    this.#timer = setTimeout(() => this.#expire(), Math.max(1, Math.ceil(millis)))
    // A statement in flight keeps the process alive by its socket; the timer need not.
    this.#timer.unref()
  }

  #expire (): void {
    this.#timer = undefined
    const now = performance.now()
    const entries = this.#entries
    while (this.#head < this.#tail) {
      const entry = entries[this.#head] as Entry
      if (!entry.done) {
        if (entry.at > now) break
        entry.done = true
        entry.expire()
      }
      entries[this.#head++] = undefined
    }
    if (this.#head < this.#tail) {
      this.#arm((entries[this.#head] as Entry).at - now)
    } else {
      this.#head = this.#tail = 0
    }
  }

  /** Drops done entries from the middle of the queue (behind a long-running head). */
  #compact (): void {
    const live = (this.#entries.slice(this.#head, this.#tail) as Entry[]).filter((entry) => !entry.done)
    this.#entries = live
    this.#head = 0
    this.#tail = live.length
    this.#compactAt = Math.max(COMPACT_AT, 2 * live.length)
  }
}
