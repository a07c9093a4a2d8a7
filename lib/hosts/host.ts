// The words the several-hosts code shares: where a host is reached, the state it is in, and what
// a server says of its role. (A registration with one host has one of these too.)

/** What replaces `host`/`port` (or `socketPath`) in the connection settings for one host. */
export interface HostAddress {
  readonly host?: string
  readonly port?: number
  readonly socketPath?: string
}

/** `sequential`: new connections go to the first host in rotation; `random`: spread over them. */
export type HostPolicy = 'sequential' | 'random'

/** `primary`: every connection must take writes; `any`: any server that answers queries. */
export type HostRole = 'primary' | 'any'

/**
 * Why a host is in or out of rotation for new connections:
 * - `up`: in rotation;
 * - `down`: connects fail (its breaker is open); probed in the background;
 * - `read-only`: a `primary` registration's host that takes no writes (demoted, or a replica);
 * - `not-ready`: a Galera node outside the primary component, or not synced;
 * - `lagging`: a replica further behind than `maxReplicaLagSeconds`, or not replicating.
 */
export type HostState = 'up' | 'down' | 'read-only' | 'not-ready' | 'lagging'

/** What a server said of itself on a new connection (hosts/role-check.ts). */
export type RoleVerdict = 'ok' | 'read-only' | 'not-ready'
