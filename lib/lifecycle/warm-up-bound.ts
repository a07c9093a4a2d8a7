import type { ClientRuntime } from '../client/runtime'
import { discard } from '../driver/discard'
import { warmUpBoundMillis } from '../pool/warm-up-bound'

/**
 * Aborts warm-up within Fastify's `pluginTimeout` (see pool/warm-up-bound.ts), failing the
 * connects in progress (a silent host's sockets) with a timeout that says how long warm-up waited.
 */
// One signal for both ends of a warm-up (the pool destroyed, or the bound reached), joined by
// hand: with AbortSignal.any() every later request of the process cost markedly more
// instructions in bench:instructions, though the joined signal was done with.
export function warmUpBound (runtime: ClientRuntime, pluginTimeout: number | undefined): { signal: AbortSignal, clear: () => void } {
  const expired = new AbortController()
  const stopped = runtime.warmUpStop.signal
  const onStop = () => expired.abort(stopped.reason)
  if (stopped.aborted) onStop()
  else stopped.addEventListener('abort', onStop, { once: true })
  const millis = warmUpBoundMillis(pluginTimeout)
  const timer = millis === undefined
    ? undefined
    : setTimeout(() => {
      const error = Object.assign(
        new Error(`warm-up gave up after ${millis} ms without an answer from the database, before Fastify's pluginTimeout (${String(pluginTimeout)} ms)`),
        { code: 'ETIMEDOUT' }
      )
      expired.abort(error)
      for (const connection of runtime.connecting) discard(connection, error)
    }, millis)
  timer?.unref()
  return {
    signal: expired.signal,
    clear: () => {
      clearTimeout(timer)
      stopped.removeEventListener('abort', onStop)
    }
  }
}
