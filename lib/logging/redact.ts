// Secrets must never leave the plugin: not in a log line, an error message, `error.cause`
// or `util.inspect` output. This file holds the one place that knows how to scrub them.

const REDACTED = '[redacted]'

// `scheme://user:password@host`: the password part of any URL-shaped credential.
const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):[^@/?#\s]*@/gi

/** Replaces every known secret and every URL password in `text`. */
export function scrubText (text: string, secrets: readonly string[]): string {
  return replaceAll(text.replace(URL_CREDENTIALS, `$1:${REDACTED}@`), secrets)
}

/**
 * Renders a connection URL for messages: scheme, user and host name only. Not the port or the
 * path: in `mysql://app:12345/secret@db` (an unencoded `/` in the password) WHATWG reads port
 * `12345` and the path `/secret@db`, which is the rest of the password.
 */
export function describeUrl (url: URL): string {
  const user = url.username === '' ? '' : `${decodeURIComponentSafe(url.username)}@`
  return `${url.protocol}//${user}${url.hostname}`
}

/** Replaces every occurrence of each value in `text` (longest first, so no fragment survives). */
export function replaceAll (text: string, values: readonly string[]): string {
  let replaced = text
  for (const value of [...values].sort((a, b) => b.length - a.length)) {
    if (value.length > 0) replaced = replaced.split(value).join(REDACTED)
  }
  return replaced
}

function decodeURIComponentSafe (value: string): string {
  try {
    return decodeURIComponent(value)
  } catch {
    return value
  }
}

// Driver errors carry text in several places (mysql2 copies the server's message into
// `sqlMessage` and the formatted statement, values included, into `sql`).
const TEXT_FIELDS = ['message', 'stack', 'sqlMessage'] as const

/**
 * Scrubs a driver error in place and returns it. The error object is kept (not copied) so its
 * `code`, `errno` and class survive for callers that match on them.
 */
export function scrubError<T> (error: T, secrets: readonly string[]): T {
  if (error === null || typeof error !== 'object') return error
  const fields = error as Record<string, unknown>
  for (const field of TEXT_FIELDS) {
    const value = fields[field]
    if (typeof value === 'string') fields[field] = scrubText(value, secrets)
  }
  // The formatted statement may hold bound values; the statement shape is not worth the risk.
  if (typeof fields.sql === 'string') delete fields.sql
  if (fields.cause !== undefined && fields.cause !== error) scrubError(fields.cause, secrets)
  return error
}

/**
 * Hides the named properties from enumeration so `util.inspect`, JSON and loggers skip them,
 * while the driver can still read them.
 */
export function hideProperties (target: object, keys: readonly string[]): void {
  for (const key of keys) {
    const descriptor = Object.getOwnPropertyDescriptor(target, key)
    if (descriptor?.enumerable === true) {
      Object.defineProperty(target, key, { ...descriptor, enumerable: false })
    }
  }
}
