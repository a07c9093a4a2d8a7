import type { FastifyBaseLogger } from 'fastify'
import type { Knex } from 'knex'
import { scrubError, scrubText } from './redact'

// knex, tarn and mysql2 write to the console unless told otherwise. Every channel they offer is
// routed here, into a child of the Fastify logger, with secrets scrubbed on the way.

/** knex's `log` option: warnings, errors and deprecations become pino lines. */
export function knexLogBridge (log: FastifyBaseLogger, secrets: readonly string[]): Knex.Config['log'] {
  const text = (message: unknown) => scrubText(typeof message === 'string' ? message : withoutBindings(message), secrets)
  return {
    warn: (message) => log.warn({ source: 'knex' }, text(message)),
    error: (message) => log.error({ source: 'knex' }, text(message)),
    deprecate: (message) => log.warn({ source: 'knex', deprecation: true }, text(message)),
    debug: (message) => log.debug({ source: 'knex' }, text(message))
  }
}

/** tarn's `log` option: it only ever reports at `warn`. */
export function tarnLogBridge (log: FastifyBaseLogger, secrets: readonly string[]) {
  return (message: string) => log.warn({ source: 'tarn' }, scrubText(message, secrets))
}

/** mysql2 connections emit `warn` for protocol oddities. */
export function forwardDriverWarnings (connection: NodeJS.EventEmitter, log: FastifyBaseLogger, secrets: readonly string[]): void {
  connection.on('warn', (warning: unknown) => {
    log.warn({ source: 'mysql2', err: scrubError(warning, secrets) }, 'mysql2 warning')
  })
}

// knex's debug objects carry the query's bound values; the statement text is enough for a log.
function withoutBindings (message: unknown): string {
  if (message !== null && typeof message === 'object' && 'sql' in message) return String(message.sql)
  return String(message)
}
