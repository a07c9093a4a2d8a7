import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import { markDisposed } from '../driver/knex-parts'
import type { DialectClient, DriverConnection } from '../driver/types'
import { checkDriverConnection } from '../driver/versions'
import { FST_FORK_SAFE_DB_CLOSED } from '../errors'
import { forwardDriverWarnings } from '../logging/log-bridges'
import { hideProperties } from '../logging/redact'
import { SECRET_KEYS } from '../options/connection'
import type { ConnectBreaker } from '../pool/connect-breaker'
import { initConnectionState } from '../pool/connection-state'

// The one path by which the plugin opens a connection, for the pool or for a KILL QUERY:
// - while the pool is closing it opens none for the pool (a KILL still goes through);
// - every attempt passes the connect breaker, so an outage costs a few attempts a second;
// - a connect in progress is tracked, so a close deadline can reach one stuck in a black hole;
// - a pool connection is set up before the pool (and knex's `pool.afterCreate`) sees it:
//   passwords hidden from util.inspect, driver warnings routed to the logger, its record
//   (pool/connection-state.ts) given, idle clock started.
// It connects to the settings knex holds now (a connection function refreshes them before each
// pool connect). Failover across hosts belongs here: choose the host, keep a breaker per host.

export type ConnectPurpose = 'pool' | 'kill'

/** What opening a connection needs from the pool's state (the client runtime provides it). */
export interface ConnectHost {
  readonly options: { readonly decorator: string, readonly secrets: readonly string[] }
  readonly log: FastifyBaseLogger
  readonly breaker: ConnectBreaker
  /** Shutdown has begun: no connection is opened for the pool. */
  readonly closing: boolean
  readonly connecting: Set<DriverConnection>
}

export function openConnection (client: DialectClient, runtime: ConnectHost, purpose: ConnectPurpose): Promise<DriverConnection> {
  if (purpose === 'pool' && runtime.closing) return Promise.reject(new FST_FORK_SAFE_DB_CLOSED(runtime.options.decorator))
  return runtime.breaker.attempt(async () => {
    const started = performance.now()
    const connection = await connect(client, runtime)
    try {
      if (purpose === 'pool') setUp(connection, runtime, performance.now() - started)
    } catch (error) {
      connection.destroy()
      throw error
    }
    return connection
  })
}

async function connect (client: DialectClient, runtime: ConnectHost): Promise<DriverConnection> {
  const connection = client.driver.createConnection(client.connectionSettings)
  // knex's own rule: an error after connecting disposes of the connection (and an 'error'
  // without a listener would crash the process).
  connection.on('error', (error: unknown) => markDisposed(connection, error))
  runtime.connecting.add(connection)
  try {
    await new Promise<void>((resolve, reject) => connection.connect((error) => { if (error === null) resolve(); else reject(error) }))
  } catch (error) {
    connection.removeAllListeners()
    throw error
  } finally {
    runtime.connecting.delete(connection)
  }
  try {
    await client.checkVersion(connection)
  } catch (error) {
    // As knex does: the version only tunes a few statements.
    runtime.log.warn({ err: error }, 'could not read the server version; assuming the latest')
  }
  return connection
}

function setUp (connection: DriverConnection, runtime: ConnectHost, connectMillis: number): void {
  checkDriverConnection(connection)
  // mysql2 keeps every password it was given on `connection.config`; knex hides only `password`.
  hideProperties(connection.config, SECRET_KEYS)
  forwardDriverWarnings(connection, runtime.log, runtime.options.secrets)
  // Its idle clock (the borrow check's) starts now.
  initConnectionState(connection, connectMillis)
}
