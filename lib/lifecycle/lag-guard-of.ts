import type { FastifyBaseLogger } from 'fastify'
import type { ClientRuntime } from '../client/runtime'
import { LagGuard } from '../hosts/lag-guard'
import type { ResolvedOptions } from '../options/resolve-options'

/** The lag guard of a runtime whose registration asked for one (`maxReplicaLagSeconds`); not started. */
export function lagGuardOf (runtime: ClientRuntime, options: ResolvedOptions, log: FastifyBaseLogger): LagGuard | undefined {
  const { decorator, maxReplicaLagSeconds, replicaLagCheckMillis, secrets } = options
  if (maxReplicaLagSeconds === undefined) return undefined
  return new LagGuard({
    options: { decorator, maxReplicaLagSeconds, replicaLagCheckMillis, secrets },
    log,
    hostSet: runtime.hosts,
    openHostConnection: async (index, opening) => runtime.openHostConnection(index, opening)
  })
}
