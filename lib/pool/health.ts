import type { FastifyBaseLogger } from 'fastify'
import type { DialectClient, DriverConnection } from '../driver/types'
import { scrubError } from '../logging/redact'
import { acquireGuarded, type AcquireHost } from './acquire-guard'
import { pingOrDiscard } from './borrow-check'

// `fastify.dbPool.check()`: one borrow and a ping within a short deadline. It never rejects, so
// it suits readiness probes and @fastify/under-pressure's `healthCheck`. A connection that does
// not answer is closed, not handed back to the pool as if it were alive.

export interface HealthHost extends AcquireHost {
  readonly client: DialectClient | undefined
  readonly pingTimeoutMillis: number
  readonly log: FastifyBaseLogger
  readonly options: AcquireHost['options'] & { readonly secrets: readonly string[] }
}

export async function checkHealth (host: HealthHost): Promise<boolean> {
  const client = host.client
  if (client === undefined) return false
  let connection: DriverConnection | undefined
  try {
    connection = await acquireGuarded(client, host, false)
    await pingOrDiscard(connection, host.pingTimeoutMillis)
    return true
  } catch (error) {
    host.log.debug({ err: scrubError(error, host.options.secrets) }, 'health check failed')
    return false
  } finally {
    if (connection !== undefined) await client.releaseConnection(connection)
  }
}
