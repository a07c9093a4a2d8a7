import Fastify, { type FastifyInstance } from 'fastify'

// A Fastify app whose log lines are kept in memory, as in app.ts, and can be awaited: a test
// waits for the line it expects (a warning past a threshold) instead of sleeping until it.

type Line = Record<string, unknown>

export interface WatchedApp {
  app: FastifyInstance
  /** Every log line written so far, parsed. */
  lines: () => Line[]
  /** Every log line written so far, raw. */
  text: () => string
  /** The first line, written already or later, that `matches`. */
  line: (matches: (line: Line) => boolean) => Promise<Line>
}

export function buildWatchedApp (): WatchedApp {
  const chunks: string[] = []
  const parsed: Line[] = []
  const waiting = new Set<{ matches: (line: Line) => boolean, resolve: (line: Line) => void }>()
  const app = Fastify({
    logger: {
      level: 'trace',
      stream: {
        write: (chunk: string) => {
          chunks.push(chunk)
          for (const text of chunk.split('\n')) {
            if (text === '') continue
            const line = JSON.parse(text) as Line
            parsed.push(line)
            for (const waiter of waiting) {
              if (!waiter.matches(line)) continue
              waiting.delete(waiter)
              waiter.resolve(line)
            }
          }
        }
      }
    }
  })
  return {
    app,
    lines: () => [...parsed],
    text: () => chunks.join(''),
    line: (matches) => {
      const found = parsed.find(matches)
      if (found !== undefined) return Promise.resolve(found)
      return new Promise((resolve) => { waiting.add({ matches, resolve }) })
    }
  }
}
