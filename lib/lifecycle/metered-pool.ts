import type { ClientRuntime } from '../client/runtime'
import { poolOf } from '../driver/tarn-pool'
import type { HostStats } from '../pool/stats'
import type { MeteredPool } from '../telemetry/pool-meters'

/** What the metrics read of one process's pool at collection time: the same numbers as stats(). */
export function meteredPool (runtime: ClientRuntime, hostStats: () => readonly HostStats[]): MeteredPool {
  const pool = () => runtime.client === undefined ? undefined : poolOf(runtime.client)
  return {
    hosts: hostStats,
    size: () => {
      const current = pool()
      return current === undefined
        ? { min: 0, max: 0, waiting: 0 }
        : { min: current.size.min, max: current.size.max, waiting: current.numPendingAcquires() }
    },
    connectionTo: (host) => {
      const current = pool()
      if (current === undefined) return undefined
      const matches = (connection: Parameters<typeof runtime.hostLabelOf>[0]) => runtime.hostLabelOf(connection) === host
      return current.idleConnections().find(matches) ?? current.borrowedConnections().find(matches)
    }
  }
}
