import type { FastifyBaseLogger } from 'fastify'
import type { Knex } from 'knex'
import { onDriverWarning } from '../driver/mysql2-parts'
import { scrubError, scrubText } from './redact'

// knex, tarn and mysql2 write to the console unless told otherwise. Every channel they offer is
// routed here, into a child of the Fastify logger, with secrets scrubbed on the way. A knex
// `log` of the user's own keeps receiving what it would receive from stock knex (scrubbed);
// the levels it does not handle go to the Fastify logger instead of the console.

type LogLevel = 'warn' | 'error' | 'deprecate' | 'debug'
const LEVELS: readonly LogLevel[] = ['warn', 'error', 'deprecate', 'debug']

/** knex's `log` option: warnings, errors and deprecations become pino lines. */
export function knexLogBridge (log: FastifyBaseLogger, secrets: readonly string[], own?: Knex.Logger): Knex.Logger {
  const text = (message: unknown) => scrubText(typeof message === 'string' ? message : withoutBindings(message), secrets)
  const pino: Record<LogLevel, (message: unknown) => void> = {
    warn: (message) => log.warn({ source: 'knex' }, text(message)),
    error: (message) => log.error({ source: 'knex' }, text(message)),
    deprecate: (message) => log.warn({ source: 'knex', deprecation: true }, text(message)),
    debug: (message) => log.debug({ source: 'knex' }, text(message))
  }
  const bridge: Knex.Logger = { ...own }
  for (const level of LEVELS) {
    const handler = (own as Record<string, unknown> | undefined)?.[level]
    bridge[level as keyof Knex.Logger] = typeof handler === 'function'
      ? ((message: unknown) => (handler as (message: unknown) => void)(typeof message === 'string' ? text(message) : message)) as never
      : pino[level] as never
  }
  return bridge
}

/** tarn's `log` option (tarn only ever reports at `warn`); a pool `log` of the user's own gets it too. */
export function tarnLogBridge (log: FastifyBaseLogger, secrets: readonly string[], own?: (message: string, level: string) => void) {
  return (message: string, level = 'warn') => {
    const scrubbed = scrubText(message, secrets)
    if (own !== undefined) own(scrubbed, level)
    else log.warn({ source: 'tarn' }, scrubbed)
  }
}

/**
 * mysql2 connections emit `warn` for protocol oddities ("packets out of order"): the warning goes
 * to the logger (and mysql2's own console line of it is swallowed, see driver/mysql2-parts.ts).
 */
export function forwardDriverWarnings (connection: NodeJS.EventEmitter, log: FastifyBaseLogger, secrets: readonly string[]): void {
  onDriverWarning(connection, (warning) => log.warn({ source: 'mysql2', err: scrubError(warning, secrets) }, 'mysql2 warning'))
}

// knex's debug objects carry the query's bound values; the statement text is enough for a log.
function withoutBindings (message: unknown): string {
  if (message !== null && typeof message === 'object' && 'sql' in message) return String(message.sql)
  return String(message)
}
