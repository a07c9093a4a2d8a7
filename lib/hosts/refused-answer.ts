import { markDisposed } from '../driver/knex-parts'
import type { DriverConnection } from '../driver/types'
import { refusalOf, refusedError } from '../query/classify-error'
import type { RoleVerdict } from './host'
import { checkRoleWithin } from './role-check'

// A server that was demoted under a pooled connection (a switchover, an Aurora failover) keeps
// answering its statements, with 1290/1792/1836; a Galera node that left the primary component
// answers 1047. Stock pools lend such a connection again and again until the app restarts. Here
// the statement fails with a coded, retryable 503 (FST_FORK_SAFE_DB_READ_ONLY or _NODE_NOT_READY,
// naming the server by host:port), its connection is disposed (knex's mark: it is destroyed when
// released, never lent again), and the host is told, so the pool retires what else it holds
// there (client/runtime.ts `hostRefused`).
//
// 1792 ("Cannot execute statement in a READ ONLY transaction") is also the answer to a write in
// the user's own read-only transaction (`START TRANSACTION READ ONLY`, knex's `readOnly: true`,
// `SET TRANSACTION READ ONLY`), which is the app's bug, not a demotion. The plugin cannot see
// every way a session makes its transaction read-only, so it asks the server, on the same
// connection, the question it asks a new one (hosts/role-check.ts, one round trip, only on a
// 1792, bounded like a ping): a server that takes writes leaves the server's error as it is and
// the connection in service; one that does not is a demotion like 1290.

/** What a refused statement needs from the pool's state (the client runtime provides it). */
export interface RefusalHost {
  readonly options: { readonly decorator: string }
  /** The bound on the role check a 1792 asks for: the statement's own deadline has ended. */
  readonly pingTimeoutMillis: number
  hostRefused: (connection: DriverConnection, verdict: Exclude<RoleVerdict, 'ok'>) => void
}

/**
 * The error a statement on `connection` should fail with when `error` is its server's refusal:
 * a promise of the coded error (or of `error` itself, for a read-only transaction of the user's
 * on a server that takes writes). undefined when `error` is no refusal: the caller classifies it.
 */
export function refusedAnswer (host: RefusalHost, connection: DriverConnection, error: unknown): Promise<unknown> | undefined {
  const refusal = refusalOf(error)
  if (refusal === undefined) return undefined
  if (refusal !== 'read-only-transaction') return Promise.resolve(refuse(host, connection, error, refusal))
  return checkRoleWithin(connection, 'primary', host.pingTimeoutMillis).then(
    (verdict) => verdict === 'ok' ? error : refuse(host, connection, error, verdict),
    // The server could not even answer that (in time: the connection is then destroyed): its own
    // error (or the lost connection) follows.
    () => error
  )
}

function refuse (host: RefusalHost, connection: DriverConnection, error: unknown, verdict: Exclude<RoleVerdict, 'ok'>): Error {
  const coded = refusedError(error, verdict, host.options.decorator, connection)
  markDisposed(connection, coded)
  host.hostRefused(connection, verdict)
  return coded
}
