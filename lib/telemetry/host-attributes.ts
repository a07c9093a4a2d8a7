import { isMariaDbServer } from '../driver/mysql2-parts'
import type { DriverConnection } from '../driver/types'
import type { MetricAttributes } from './otel-api'
import { ATTRIBUTE } from './semconv'

// What the metrics say of a host: where it is (`server.address`, `server.port`, from its label,
// `host:port` or a socket path) and what its handshake said (`db.system.name`: `mariadb` or
// `mysql`) with the connection's database (`db.namespace`).

/** `server.address` and `server.port` of a host label: `host:port`, `[v6]:port`, or a socket path (no port). */
export function serverOf (label: string): { address: string, port: number | undefined } {
  const match = /^(\[[^\]]+\]|[^:/]+):(\d+)$/.exec(label)
  if (match === null) return { address: label, port: undefined }
  const host = match[1]
  return { address: host.startsWith('[') ? host.slice(1, -1) : host, port: Number(match[2]) }
}

/** The database system and namespace a pool connection says it is on. */
export interface HostFacts {
  system: 'mariadb' | 'mysql' | undefined
  namespace: string | undefined
}

export function factsOf (connection: DriverConnection): HostFacts {
  const mariaDb = isMariaDbServer(connection)
  const database = (connection.config as { database?: unknown }).database
  return {
    system: mariaDb === undefined ? undefined : mariaDb ? 'mariadb' : 'mysql',
    namespace: typeof database === 'string' && database !== '' ? database : undefined
  }
}

/** A host's attributes: the pool's name, its system and namespace when known, its address and port. */
export function hostAttributes (poolName: string, label: string, facts: HostFacts | undefined): MetricAttributes {
  const { address, port } = serverOf(label)
  const attributes: Record<string, string | number> = { [ATTRIBUTE.poolName]: poolName }
  if (facts?.system !== undefined) attributes[ATTRIBUTE.system] = facts.system
  if (facts?.namespace !== undefined) attributes[ATTRIBUTE.namespace] = facts.namespace
  attributes[ATTRIBUTE.address] = address
  if (port !== undefined) attributes[ATTRIBUTE.port] = port
  return Object.freeze(attributes)
}
