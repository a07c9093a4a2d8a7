import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { FastifyBaseLogger } from 'fastify'
import { channels, type PoolIdentity, type QueryEndEvent } from '../events/channels'
import { scrubText } from '../logging/redact'
import { roundMillis } from '../pool/stats'

// `slowQueryMillis`: a statement that ran longer than it logs one warning when it ends, with its
// SQL as sent to `query:end` (placeholders, never bound values), its duration, host, connection,
// request id and route. A subscriber of `query:end` (events/channels.ts), one for the whole
// process, each pool's threshold found by its identity, as stats() counts; subscribed only while
// some pool has it on, so other processes' statements publish nothing for it.
//
// A statement still running is not reported until it ends: the query timeout bounds how long
// that is (a timed-out statement ends with its code, FST_FORK_SAFE_DB_QUERY_TIMEOUT, and is
// logged then if it was slow). A transaction's own BEGIN and COMMIT are not builder statements
// and publish no `query:end`: they are not logged.
//
// The SQL is the text knex compiled: a builder's values are placeholders, but a literal the
// caller wrote into a raw()'s text (a template string with a token in it) is part of it. The
// registration's secrets (its passwords) are scrubbed from it as from every log line; other
// inlined literals are not known to be secret and are logged as written.

interface Watched {
  readonly thresholdMillis: number
  readonly log: FastifyBaseLogger
  /** The registration's secrets, scrubbed from the SQL. */
  readonly secrets: readonly string[]
}

const watched = new Map<PoolIdentity, Watched>()

function onQueryEnd (message: unknown): void {
  const event = message as QueryEndEvent
  const pool = watched.get(event.pool)
  if (pool === undefined || event.durationMillis <= pool.thresholdMillis) return
  pool.log.warn({
    sql: scrubText(event.sql, pool.secrets),
    durationMillis: roundMillis(event.durationMillis),
    thresholdMillis: pool.thresholdMillis,
    requestId: event.requestId,
    route: event.route,
    host: event.host,
    connectionId: event.connectionId,
    inTransaction: event.inTransaction,
    errorCode: event.errorCode
  }, 'slow query: a statement ran longer than slowQueryMillis')
}

/** Logs the statements of the pool `identity` that run longer than `thresholdMillis`, from now on. */
export function logSlowQueries (identity: PoolIdentity, thresholdMillis: number, log: FastifyBaseLogger, secrets: readonly string[]): void {
  if (watched.size === 0) subscribe(channels.queryEnd, onQueryEnd)
  watched.set(identity, { thresholdMillis, log, secrets })
}

/** The pool is gone (closed, or left to the process that built it); the last one unsubscribes. */
export function stopLoggingSlowQueries (identity: PoolIdentity): void {
  if (!watched.delete(identity)) return
  if (watched.size === 0) unsubscribe(channels.queryEnd, onQueryEnd)
}
