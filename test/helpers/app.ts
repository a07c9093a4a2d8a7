import Fastify, { type FastifyInstance } from 'fastify'

// A Fastify app whose log lines (at trace level) are kept in memory, so tests can assert what
// was logged and that secrets were not.

export interface LoggedApp {
  app: FastifyInstance
  /** Every log line written so far, parsed. */
  lines: () => Array<Record<string, unknown>>
  /** Every log line written so far, raw. */
  text: () => string
}

export function buildApp (): LoggedApp {
  const chunks: string[] = []
  const app = Fastify({
    logger: { level: 'trace', stream: { write: (chunk: string) => { chunks.push(chunk) } } }
  })
  return {
    app,
    text: () => chunks.join(''),
    lines: () => chunks.join('').split('\n').filter((line) => line !== '').map((line) => JSON.parse(line))
  }
}

/** Pretends this process was forked: `process.pid` reads `fakePid` until the returned function runs. */
export function simulatePid (fakePid: number): () => void {
  const descriptor = Object.getOwnPropertyDescriptor(process, 'pid')
  if (descriptor === undefined) throw new Error('process.pid has no descriptor')
  Object.defineProperty(process, 'pid', { ...descriptor, value: fakePid })
  return () => Object.defineProperty(process, 'pid', descriptor)
}
