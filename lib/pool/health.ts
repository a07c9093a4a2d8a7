import { scrubError } from '../logging/redact'
import type { DriverConnection } from '../driver/internals'
import type { ClientRuntime } from '../driver/runtime'
import { acquireGuarded } from './acquire-guard'
import { pingOrDiscard } from './borrow-check'

// `fastify.dbPool.check()`: one borrow and a ping within a short deadline. It never rejects, so
// it suits readiness probes and @fastify/under-pressure's `healthCheck`. A connection that does
// not answer is closed, not handed back to the pool as if it were alive.

export async function checkHealth (runtime: ClientRuntime): Promise<boolean> {
  const client = runtime.client
  if (client === undefined) return false
  let connection: DriverConnection | undefined
  try {
    connection = await acquireGuarded(client, runtime, false)
    await pingOrDiscard(connection, runtime.pingTimeoutMillis)
    return true
  } catch (error) {
    runtime.log.debug({ err: scrubError(error, runtime.options.secrets) }, 'health check failed')
    return false
  } finally {
    if (connection !== undefined) await client.releaseConnection(connection)
  }
}
