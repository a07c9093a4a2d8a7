import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import { markDisposed } from '../driver/knex-parts'
import type { DialectClient, DriverConnection } from '../driver/types'
import { checkDriverConnection } from '../driver/versions'
import { FST_FORK_SAFE_DB_CLOSED } from '../errors'
import { forwardDriverWarnings } from '../logging/log-bridges'
import { hideProperties } from '../logging/redact'
import { SECRET_KEYS } from '../options/connection'
import type { HostSet } from '../hosts/host-set'
import type { ResolvedHost } from '../options/connection'
import { connectionState, initConnectionState } from '../pool/connection-state'

// The one path by which the plugin opens a connection, for the pool or for a KILL QUERY:
// - while the pool is closing it opens none for the pool (a KILL still goes through);
// - a pool connection goes to a host of the registration's host set (hosts/host-set.ts): by
//   policy among the hosts in rotation, its role checked, failing over within the attempt;
//   a KILL goes to the host of the statement's connection;
// - every attempt passes that host's connect breaker, so an outage costs a few attempts a second;
// - a connect in progress is tracked, so a close deadline can reach one stuck in a black hole;
// - a pool connection is set up before the pool (and knex's `pool.afterCreate`) sees it:
//   passwords hidden from util.inspect, driver warnings routed to the logger, its record
//   (pool/connection-state.ts) given, idle clock started.
// With one host it connects to the settings knex holds now (a connection function refreshes them
// before each pool connect); with several, to each host's own settings.

export type ConnectPurpose = 'pool' | 'kill'

/** What opening a connection needs from the pool's state (the client runtime provides it). */
export interface ConnectHost {
  readonly options: { readonly decorator: string, readonly secrets: readonly string[], readonly connection: { readonly hosts: readonly ResolvedHost[] } }
  readonly log: FastifyBaseLogger
  readonly hosts: HostSet
  /** Shutdown has begun: no connection is opened for the pool. */
  readonly closing: boolean
  readonly connecting: Set<DriverConnection>
}

/** Opens a connection for the pool, or for a KILL of the statement running on `target`. */
export function openConnection (client: DialectClient, runtime: ConnectHost, purpose: ConnectPurpose, target?: DriverConnection): Promise<DriverConnection> {
  if (purpose === 'kill') {
    const index = target === undefined ? 0 : connectionState(target)?.hostIndex ?? 0
    return runtime.hosts.attemptOn(index, () => connect(client, runtime, settingsOf(client, runtime, index), runtime.connecting))
  }
  if (runtime.closing) return Promise.reject(new FST_FORK_SAFE_DB_CLOSED(runtime.options.decorator))
  return runtime.hosts.open(async (index) => {
    const started = performance.now()
    const connection = await connect(client, runtime, settingsOf(client, runtime, index), runtime.connecting)
    try {
      setUp(connection, runtime, performance.now() - started, index)
    } catch (error) {
      connection.destroy()
      throw error
    }
    return connection
  })
}

/** A connection to host `index` for a background probe, outside the pool: its role is checked, then it is closed. */
export async function openProbeConnection (client: DialectClient, runtime: ConnectHost, index: number): Promise<DriverConnection> {
  const connection = await connect(client, runtime, settingsOf(client, runtime, index), runtime.hosts.probing)
  runtime.hosts.probing.add(connection)
  hideProperties(connection.config, SECRET_KEYS)
  return connection
}

/**
 * A connection to host `index` for the lag guard, outside the pool and its breakers: a check
 * must reach a host the pool refuses (a lagging one), and the pool must not count it. It is in
 * `opening` (the guard's) while it connects, so the guard's close() reaches it.
 */
export async function openMonitorConnection (client: DialectClient, runtime: ConnectHost, index: number, opening: Set<DriverConnection>): Promise<DriverConnection> {
  const connection = await connect(client, runtime, settingsOf(client, runtime, index), opening)
  hideProperties(connection.config, SECRET_KEYS)
  return connection
}

/** One host: what knex holds now (a connection function's latest result); several: the host's own. */
function settingsOf (client: DialectClient, runtime: ConnectHost, index: number): object {
  const { hosts } = runtime.options.connection
  return hosts.length === 1 ? client.connectionSettings : hosts[index]?.settings ?? client.connectionSettings
}

async function connect (client: DialectClient, runtime: ConnectHost, settings: object, connecting: Set<DriverConnection>): Promise<DriverConnection> {
  const connection = client.driver.createConnection(settings)
  // knex's own rule: an error after connecting disposes of the connection (and an 'error'
  // without a listener would crash the process).
  connection.on('error', (error: unknown) => markDisposed(connection, error))
  connecting.add(connection)
  try {
    await new Promise<void>((resolve, reject) => connection.connect((error) => { if (error === null) resolve(); else reject(error) }))
  } catch (error) {
    connection.removeAllListeners()
    throw error
  } finally {
    connecting.delete(connection)
  }
  try {
    await client.checkVersion(connection)
  } catch (error) {
    // As knex does: the version only tunes a few statements.
    runtime.log.warn({ err: error }, 'could not read the server version; assuming the latest')
  }
  return connection
}

function setUp (connection: DriverConnection, runtime: ConnectHost, connectMillis: number, hostIndex: number): void {
  checkDriverConnection(connection)
  // mysql2 keeps every password it was given on `connection.config`; knex hides only `password`.
  hideProperties(connection.config, SECRET_KEYS)
  forwardDriverWarnings(connection, runtime.log, runtime.options.secrets)
  // Its idle clock (the borrow check's) starts now.
  initConnectionState(connection, connectMillis, hostIndex)
}
