import { stripKnexQueryFields } from '../driver/knex-parts'
import { replaceAll, scrubText } from '../logging/redact'

// A failed query's error travels far: to the handler, to the log, and (Fastify sends
// `error.message` even for 500s) to the HTTP client. Stock knex puts the statement with its
// bound values interpolated into the message, mysql2 adds the formatted statement as `err.sql`,
// and the server's own message can quote a value ("Duplicate entry 'alice@example.com'").
// So, before the handler sees the error, it is rewritten in place:
// - `message` becomes "Database query failed (ER_DUP_ENTRY)", safe for any client; the server's
//   own words follow when they quote no bound value ("Database query failed (ER_NO_SUCH_TABLE):
//   Table 'shop.unknown_table' doesn't exist"), so logs and handlers that read the message stay
//   useful. The server quotes values between single quotes, and may cut a long one short, so
//   a quoted fragment that overlaps any bound value keeps the message generic;
// - `detail` keeps what developers need: the statement with `?` placeholders and the server's
//   message, with every bound value and secret replaced; `query` is the statement alone;
// - `sql` (mysql2's formatted statement) is deleted; `code`, `errno` and `sqlState` stay, so
//   handlers keep matching on `err.code === 'ER_DUP_ENTRY'`.

// Shorter values would blank out ordinary words and numbers in the server's message.
const MIN_SCRUBBED_LENGTH = 3

export interface FailedQuery {
  sql?: string
  bindings?: readonly unknown[]
}

export function sanitizeQueryError (error: unknown, query: FailedQuery, secrets: readonly string[]): void {
  if (!(error instanceof Error)) return
  const fields = error as Error & Record<string, unknown>
  if (fields.sanitized === true) return
  // The plugin's own errors carry no value and their message is the point: only undo the
  // statement knex prepended to it.
  if (typeof fields.code === 'string' && fields.code.startsWith('FST_FORK_SAFE_DB_')) {
    const prefix = `${query.sql ?? ''} - `
    if (error.message.startsWith(prefix)) error.message = error.message.slice(prefix.length)
    return
  }
  const values = boundTexts(query.bindings)
  const scrub = (text: string) => replaceAll(scrubText(text, secrets), values)

  // knex's `.timeout()` error carries the statement's bound values; its timeouts have no code.
  if (stripKnexQueryFields(error).knexTimeout) {
    fields.code = 'FST_FORK_SAFE_DB_QUERY_TIMEOUT'
    fields.statusCode = 503
  }
  const code = typeof fields.code === 'string' ? fields.code : undefined
  const words = typeof fields.sqlMessage === 'string' ? serverWords(fields.sqlMessage, query.bindings, secrets) : undefined
  const message = `Database query failed${code === undefined ? '' : ` (${code})`}${words === undefined ? '' : `: ${words}`}`
  fields.detail = scrub(error.message)
  if (typeof query.sql === 'string') fields.query = query.sql
  if (typeof fields.sqlMessage === 'string') fields.sqlMessage = scrub(fields.sqlMessage)
  delete fields.sql
  error.message = message
  // The stack's first line repeats the original message; keep only the frames.
  if (typeof error.stack === 'string') {
    const frames = error.stack.indexOf('\n    at ')
    error.stack = `${error.name}: ${message}${frames === -1 ? '' : error.stack.slice(frames)}`
  }
  Object.defineProperty(error, 'sanitized', { value: true, enumerable: false })
}

const QUOTED = /'([^']*)'/g
const TRUNCATION = /\.\.\.$/

/** The server's message, when it quotes no bound value and holds no secret; else undefined. */
function serverWords (sqlMessage: string, bindings: readonly unknown[] | undefined, secrets: readonly string[]): string | undefined {
  if (scrubText(sqlMessage, secrets) !== sqlMessage) return undefined
  const texts: string[] = []
  for (const value of bindings ?? []) {
    if (value === null || value === undefined) continue
    if (typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') texts.push(String(value))
    // A date, a buffer or an object is formatted by the driver: its text cannot be told apart.
    else if (QUOTED.test(sqlMessage)) return undefined
  }
  QUOTED.lastIndex = 0
  for (const [, quoted] of sqlMessage.matchAll(QUOTED)) {
    const fragment = quoted.replace(TRUNCATION, '')
    if (texts.some((text) => quotes(fragment, text))) return undefined
  }
  // Unquoted, only a value long enough not to be an ordinary word counts.
  if (texts.some((text) => text.length >= MIN_SCRUBBED_LENGTH && sqlMessage.includes(text))) return undefined
  return sqlMessage
}

/**
 * Whether a quoted fragment of the server's message may show the value `text`: it is the value
 * or a part of it (the server cuts long values short), or it contains it. A value shorter than 3
 * characters counts only as a whole token ('1', '1-2'), not inside a name ('t1.users').
 */
function quotes (fragment: string, text: string): boolean {
  if (text === '') return false
  if (fragment !== '' && text.includes(fragment)) return true
  return text.length >= MIN_SCRUBBED_LENGTH ? fragment.includes(text) : fragment.split(/[^A-Za-z0-9]+/).includes(text)
}

function boundTexts (bindings: readonly unknown[] | undefined): string[] {
  const texts = new Set<string>()
  for (const value of bindings ?? []) {
    const text = typeof value === 'string' ? value : typeof value === 'number' || typeof value === 'bigint' ? String(value) : undefined
    if (text !== undefined && text.length >= MIN_SCRUBBED_LENGTH) texts.add(text)
  }
  return [...texts]
}
