import type { Knex } from 'knex'
import type { ClientRuntime } from '../client/runtime'
import { discard } from '../driver/discard'
import type { LagGuard } from '../hosts/lag-guard'
import type { IdleKeeper } from '../pool/idle-keeper'
import { stopCounting } from '../pool/stats'
import type { PoolMetricsHandle } from '../telemetry/metrics'
import { stopLoggingSlowQueries } from '../telemetry/slow-query-log'

// The one way a process lets go of what it built: its timers stopped (the idle keeper, the
// hosts' breakers' outage summaries and probes, the deadline queue, the leak detector's sweep),
// its primary watch removed, its counts, metrics and slow-query log dropped;
// and, for a pool of its own, the pool destroyed (its metrics and slow-query log last, once the
// statements still running have ended). A pool built under another pid (a fork's
// parent's) is abandoned: stopping a timer sends nothing, while closing would send COM_QUIT on
// sockets the parent still uses.

/** The knex instance one process built, and what keeps it. */
export interface Built {
  pid: number
  knex: Knex
  runtime: ClientRuntime
  keeper: IdleKeeper
  stopPlacementWatch: () => void
  /** The replica lag guard (`maxReplicaLagSeconds`), if any. */
  lagGuard: LagGuard | undefined
  /** Its metrics (`metrics`), unless off or the meter is the no-op one. */
  metrics: PoolMetricsHandle | undefined
}

/** Stops everything that would act on the pool, without touching a connection. */
export function abandon (built: Built): void {
  stopActing(built)
  stopObserving(built)
}

function stopActing (built: Built): void {
  built.keeper.stop()
  built.lagGuard?.stop()
  built.stopPlacementWatch()
  built.runtime.hosts.stop()
  stopCounting(built.runtime.identity)
  built.runtime.leaks?.stop()
}

/** The slow-query log and the metrics: they only listen, so a pool being drained keeps them. */
function stopObserving (built: Built): void {
  stopLoggingSlowQueries(built.runtime.identity)
  built.metrics?.stop()
}

/**
 * Destroys the pool this process built, waiting for in-flight queries. `reason`: a failed
 * warm-up, whose connects in progress are failed with it first (knex.destroy() waits for them,
 * and a silent host's would last connectTimeout).
 */
export async function destroyBuilt (built: Built, reason?: Error): Promise<void> {
  stopActing(built)
  built.runtime.hosts.closeProbes()
  if (reason !== undefined) for (const connection of built.runtime.connecting) discard(connection, reason)
  try {
    await Promise.all([built.knex.destroy(), built.lagGuard?.close()])
  } finally {
    built.runtime.deadlines?.stop()
    // After the drain: the slow statements that hold a shutdown up are logged and metered too.
    stopObserving(built)
  }
}
