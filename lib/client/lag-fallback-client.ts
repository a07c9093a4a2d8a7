import type { DriverConnection } from '../driver/types'
import { ForkSafeClient } from './fork-safe-client'
import { runtimeOf } from './runtime'

// The client of a registration with `replicaLagFallback`: a connection the fallback registration
// lent (pool/lag-fallback.ts) goes back to that registration's pool, not this one's. A subclass,
// so the release of every other registration has no check to pass; knex builds transactions'
// clients from this prototype, so a transaction's release takes the same way.

export class LagFallbackClient extends ForkSafeClient {
  override releaseConnection (connection: DriverConnection): Promise<void> {
    const fallback = runtimeOf(this).lagFallback
    if (fallback !== undefined && fallback.owns(connection)) return fallback.release(connection)
    return super.releaseConnection(connection)
  }
}
