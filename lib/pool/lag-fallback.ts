import type { DialectClient, DriverConnection } from '../driver/types'
import { FST_FORK_SAFE_DB_REPLICA_LAG } from '../errors'

// `replicaLagFallback`: while every host of a replica registration lags, its queries borrow a
// connection of another registration (the primary's) instead of failing. The borrow is that
// registration's own: its client's acquireConnection (its breaker, saturation, borrow check and
// `pool:acquire` event, so its stats count it), released back to its client, and a KILL for a
// statement on it opened by that registration, to its host; a refusal or a failed KILL on it is
// that registration's to act on (its host set, its pool). The replica's client only passes
// the connection through, and remembers which connections it passed (a WeakMap: nothing is
// kept once a connection is gone). A transaction begun on the replica registration during a
// fallback runs on the primary's connection, to its end.
//
// Only queries fall back: the replica's own upkeep (warm-up, keeper, health check) never
// borrows the primary's connections.

/** A statement's refusal (hosts/host.ts RoleVerdict but 'ok'; pool/ sits below hosts/). */
type Refusal = 'read-only' | 'not-ready'

/** The registration that serves while the replicas lag (lifecycle/ provides it, per process). */
export interface FallbackTarget {
  /** Its knex client in this process. */
  client: () => DialectClient
  /** A connection for a KILL QUERY, to the host of its connections. */
  openKillConnection: (connection: DriverConnection) => Promise<DriverConnection> | undefined
  /** A statement on one of its connections was answered read-only or not ready. */
  hostRefused: (connection: DriverConnection, verdict: Refusal) => void
  /** A KILL for a statement on one of its connections could not reach its host. */
  killFailed: (connection: DriverConnection, error: unknown) => void
}

export class LagFallback {
  readonly #target: FallbackTarget
  /** The connections lent through this fallback, and the client each goes back to. */
  readonly #lent = new WeakMap<DriverConnection, DialectClient>()

  constructor (target: FallbackTarget) {
    this.#target = target
  }

  /** Whether `error` says the registration's hosts all lag (then a query falls back). */
  static covers (error: unknown): boolean {
    return error instanceof FST_FORK_SAFE_DB_REPLICA_LAG
  }

  /** A connection of the fallback registration, borrowed as its own queries borrow. */
  borrow (): Promise<DriverConnection> {
    const client = this.#target.client()
    return client.acquireConnection().then((connection) => {
      this.#lent.set(connection, client)
      return connection
    })
  }

  owns (connection: DriverConnection): boolean {
    return this.#lent.has(connection)
  }

  /** Back to the client it came from. */
  release (connection: DriverConnection): Promise<void> {
    const client = this.#lent.get(connection)
    this.#lent.delete(connection)
    return client === undefined ? Promise.resolve() : client.releaseConnection(connection)
  }

  openKillConnection (connection: DriverConnection): Promise<DriverConnection> | undefined {
    return this.#target.openKillConnection(connection)
  }

  hostRefused (connection: DriverConnection, verdict: Refusal): void {
    this.#target.hostRefused(connection, verdict)
  }

  killFailed (connection: DriverConnection, error: unknown): void {
    this.#target.killFailed(connection, error)
  }
}
