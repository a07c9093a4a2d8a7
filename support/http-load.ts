import { Agent, request } from 'node:http'

// A small closed-loop HTTP load generator: `concurrency` clients, each sending its next request
// when the previous one has answered, until `requests` have been sent or `stop()` is called.
// Every outcome is kept, so tests can assert that no request failed and benchmarks can compute
// latency percentiles.

export interface Outcome {
  status: number
  /** Milliseconds from sending to the end of the response. */
  latency: number
  /** When it was sent (performance.now() of this process): orders requests by sending. */
  sentAt: number
  /** The `x-worker-pid` header, when the response had one. */
  workerPid?: number
  /** Set when the request failed below HTTP (reset, refused, hang-up). */
  error?: string
}

export interface LoadOptions {
  port: number
  host?: string
  path: string | ((index: number) => string)
  method?: string
  body?: (index: number) => unknown
  requests: number
  concurrency: number
  /** Reuse connections (the default), or open one per request. */
  keepAlive?: boolean
  /**
   * Gives up on a request that has not been answered within this many milliseconds and records
   * it as `error: 'TIMEOUT'` (hung). Unset: wait for ever, as a plain client does.
   */
  timeoutMillis?: number
}

export interface Load {
  /** Resolves with every outcome once all requests have been answered or stop() was called. */
  done: Promise<Outcome[]>
  /** Outcomes so far. */
  outcomes: Outcome[]
  stop: () => void
  /** Resolves once `count` outcomes have arrived (or the load ended short of them). */
  reached: (count: number) => Promise<void>
}

/** The `error` of an outcome that got no answer within `timeoutMillis`. */
export const HUNG = 'TIMEOUT'

export function sendOne (options: LoadOptions, index: number, agent: Agent | false): Promise<Outcome> {
  const path = typeof options.path === 'function' ? options.path(index) : options.path
  const payload = options.body === undefined ? undefined : JSON.stringify(options.body(index))
  const started = performance.now()
  return new Promise((resolve) => {
    let settled = false
    let timer: NodeJS.Timeout | undefined
    const settle = (result: Omit<Outcome, 'sentAt'>) => {
      if (settled) return
      settled = true
      if (timer !== undefined) clearTimeout(timer)
      resolve({ ...result, sentAt: started })
    }
    const outgoing = request({
      host: options.host ?? '127.0.0.1',
      port: options.port,
      path,
      method: options.method ?? 'GET',
      agent,
      headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
    }, (response) => {
      response.resume()
      response.on('end', () => {
        const pid = Number(response.headers['x-worker-pid'])
        settle({ status: response.statusCode ?? 0, latency: performance.now() - started, ...(Number.isInteger(pid) ? { workerPid: pid } : {}) })
      })
      response.on('error', (error) => settle({ status: 0, latency: performance.now() - started, error: error.message }))
    })
    outgoing.on('error', (error: NodeJS.ErrnoException) => settle({ status: 0, latency: performance.now() - started, error: error.code ?? error.message }))
    // A request nobody answers is recorded as hung, then its socket is destroyed (the error that
    // follows is ignored: the outcome is settled).
    if (options.timeoutMillis !== undefined) {
      timer = setTimeout(() => {
        settle({ status: 0, latency: performance.now() - started, error: HUNG })
        outgoing.destroy()
      }, options.timeoutMillis)
    }
    outgoing.end(payload)
  })
}

export function startLoad (options: LoadOptions): Load {
  const agent = options.keepAlive === false ? false : new Agent({ keepAlive: true, maxSockets: options.concurrency })
  const outcomes: Outcome[] = []
  const waiters = new Map<number, Array<() => void>>()
  let next = 0
  let stopped = false
  // A function, not an inline condition: stop() flips `stopped` from outside the loop.
  const running = () => !stopped && next < options.requests
  async function client (): Promise<void> {
    while (running()) {
      outcomes.push(await sendOne(options, next++, agent))
      for (const wake of waiters.get(outcomes.length) ?? []) wake()
      waiters.delete(outcomes.length)
    }
  }
  const done = Promise.all(Array.from({ length: options.concurrency }, client)).then(() => {
    if (agent !== false) agent.destroy()
    for (const wakes of waiters.values()) for (const wake of wakes) wake()
    waiters.clear()
    return outcomes
  })
  let finished = false
  done.then(() => { finished = true }, () => { finished = true })
  const reached = (count: number) => new Promise<void>((resolve) => {
    if (outcomes.length >= count || stopped || finished) return resolve()
    waiters.set(count, [...(waiters.get(count) ?? []), resolve])
  })
  return { done, outcomes, stop: () => { stopped = true }, reached }
}

/** Outcomes that a user would call a failure: transport errors and 5xx. */
export function failures (outcomes: readonly Outcome[]): Outcome[] {
  return outcomes.filter((outcome) => outcome.error !== undefined || outcome.status >= 500)
}

/**
 * Every load a test starts, so that its clean-up can stop them all, whether the test passed or
 * not: a load left running after a failed assertion keeps its clients reconnecting for ever.
 */
export class Loads {
  #started: Load[] = []

  start (options: LoadOptions): Load {
    const load = startLoad(options)
    this.#started.push(load)
    return load
  }

  /** No client sends another request (the ones in flight go on). */
  stop (): void {
    for (const load of this.#started) load.stop()
  }

  /** Resolves once every request in flight has an outcome. */
  async settled (): Promise<void> {
    const started = this.#started
    this.#started = []
    await Promise.all(started.map(async (load) => { load.stop(); await load.done }))
  }
}
