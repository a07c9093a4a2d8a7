import { request } from 'node:http'

// Scrapes a Prometheus endpoint every `intervalMillis`, each scrape bracketed by two reads of
// another count (the database's own count of the app's connections): what the metrics said,
// and what the server said just before and just after. One scrape at a time; the next starts
// `intervalMillis` after the previous one started, or at once if it ran longer.

export interface Scrape {
  /** Milliseconds (performance.now()) at the middle of the bracket. */
  at: number
  /** When the count before was asked for, and when the count after had answered. */
  startedAt: number
  endedAt: number
  /** The HTTP round trip of the scrape, ms. */
  scrapeMillis: number
  /** HTTP status, or 0 when the scrape failed below HTTP. */
  status: number
  /** What went wrong below HTTP (a reset, a refusal, 'TIMEOUT'). */
  error?: string
  body: string
  /** The other count just before the scrape and just after it. */
  before: number
  after: number
}

export interface ScrapeLoop {
  scrapes: Scrape[]
  /** Stops after the scrape under way; resolves with every scrape. */
  stop: () => Promise<Scrape[]>
}

function get (url: URL, timeoutMillis: number): Promise<{ status: number, body: string, error?: string }> {
  return new Promise((resolve) => {
    const outgoing = request(url, { agent: false }, (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }))
      response.on('error', (error) => resolve({ status: 0, body: '', error: error.message }))
    })
    outgoing.setTimeout(timeoutMillis, () => {
      resolve({ status: 0, body: '', error: 'TIMEOUT' })
      outgoing.destroy()
    })
    outgoing.on('error', (error: NodeJS.ErrnoException) => resolve({ status: 0, body: '', error: error.code ?? error.message }))
    outgoing.end()
  })
}

export function startScraping (url: URL, count: () => Promise<number>, intervalMillis: number, timeoutMillis: number): ScrapeLoop {
  const scrapes: Scrape[] = []
  let stopped = false
  // A function, not an inline condition: stop() flips `stopped` from outside the loop.
  const running = () => !stopped
  let wake: (() => void) | undefined
  const pause = (millis: number) => new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, millis)
    wake = () => { clearTimeout(timer); resolve() }
  })
  const loop = (async () => {
    while (running()) {
      const started = performance.now()
      const before = await count()
      const sent = performance.now()
      const { status, body, error } = await get(url, timeoutMillis)
      const scrapeMillis = performance.now() - sent
      const after = await count()
      const ended = performance.now()
      scrapes.push({ at: (started + ended) / 2, startedAt: started, endedAt: ended, scrapeMillis, status, body, before, after, ...(error === undefined ? {} : { error }) })
      if (running()) await pause(Math.max(0, started + intervalMillis - performance.now()))
    }
  })()
  return {
    scrapes,
    stop: async () => {
      stopped = true
      wake?.()
      await loop
      return scrapes
    }
  }
}
