import { FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, FST_FORK_SAFE_DB_WARMUP_FAILED } from '../errors'
import { scrubError } from '../logging/redact'
import type { ResolvedOptions } from '../options/resolve-options'

// A failed connect reaches warm-up coded (FST_FORK_SAFE_DB_CONNECT_TIMEOUT, _CONNECT_REFUSED,
// _UNAVAILABLE); warm-up's own error names what the driver said, and keeps it as its cause.
const CONNECT_FAILURES = new Set(['FST_FORK_SAFE_DB_CONNECT_TIMEOUT', 'FST_FORK_SAFE_DB_CONNECT_REFUSED', 'FST_FORK_SAFE_DB_UNAVAILABLE'])

/** FST_FORK_SAFE_DB_WARMUP_FAILED for `failure`, or for the bound's reason when `signal` aborted. */
export function warmUpFailure (failure: unknown, signal: AbortSignal, options: Pick<ResolvedOptions, 'decorator' | 'secrets' | 'pool'>): Error {
  const cause = scrubError(signal.aborted ? signal.reason : driverErrorOf(failure), options.secrets)
  // A connect that never completes ends as an acquire timeout: say so, and how long it was.
  const description = failure instanceof FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT
    ? `no connection was opened within pool.acquireTimeoutMillis (${options.pool.acquireTimeoutMillis} ms)`
    : describeError(cause)
  return new FST_FORK_SAFE_DB_WARMUP_FAILED(options.decorator, description, { cause })
}

function driverErrorOf (error: unknown): unknown {
  const { code, cause } = (error ?? {}) as { code?: unknown, cause?: unknown }
  return typeof code === 'string' && CONNECT_FAILURES.has(code) && cause !== undefined ? cause : error
}

function describeError (error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    return typeof code === 'string' ? `${code}: ${error.message}` : error.message
  }
  return String(error)
}
