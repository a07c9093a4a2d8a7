import cluster from 'node:cluster'
import { resolveClusterOptions, notPrimary, type ClusterOptions } from './options'
import { ForkSafeCluster } from './primary'
import { tellPrimary } from './protocol'

// `fastify-fork-safe-db/cluster`: a node:cluster primary that keeps `workers` Fastify workers
// serving, replaces one only once its replacement listens warm (recycles and rolls lose
// nothing), respawns crashed ones with backoff, and on SIGINT/SIGTERM/SIGHUP drains them all
// and starts none. The workers register fastify-fork-safe-db/worker, which reports "listening"
// and retires when the primary asks. Loads neither Fastify nor knex in the primary.

let started = false

/**
 * Forks the workers (the first alone, the rest once it listens) and keeps them serving. Call it
 * in the primary, once. `cluster.ready` resolves once all listen; `cluster.closed` once a stop
 * signal or `close()` has drained them all.
 */
export function startCluster (options?: ClusterOptions): ForkSafeCluster {
  const resolved = resolveClusterOptions(options)
  if (!cluster.isPrimary) throw notPrimary(`in a cluster worker (pid ${process.pid})`)
  if (started) throw notPrimary('a second time in this process')
  started = true
  // SCHED_NONE on Linux unless NODE_CLUSTER_SCHED_POLICY says otherwise: the workers accept
  // from the shared socket themselves. Under round-robin the primary holds each connection it
  // hands over until the worker acknowledges it, and a worker that dies never does: its client
  // hangs and the primary leaks the descriptor (nodejs/node#3551). Read at the first fork.
  if (process.env.NODE_CLUSTER_SCHED_POLICY === undefined && process.platform === 'linux') cluster.schedulingPolicy = cluster.SCHED_NONE
  const policy = cluster.schedulingPolicy === cluster.SCHED_RR ? 'rr' : 'none'
  const pid = process.pid
  // The first line: the pid to signal, and what each signal does.
  const { rollSignals, stopSignals } = resolved
  const actions: string[] = []
  if (rollSignals.length > 0) actions.push(`${rollSignals.map((signal) => `\`kill -${signal.slice(3)} ${pid}\``).join(' or ')} rolls the workers`)
  const stopName = stopSignals.includes('SIGTERM') ? 'TERM' : stopSignals[0]?.slice(3)
  if (stopName !== undefined) actions.push(`\`kill -${stopName} ${pid}\`${stopSignals.includes('SIGINT') ? ' (or Ctrl-C)' : ''} stops them`)
  resolved.logger.info({ pid, workers: resolved.workers, schedulingPolicy: policy }, `primary ${pid} started${actions.length > 0 ? `: ${actions.join(', ')}` : ''}`)
  return new ForkSafeCluster(resolved)
}

/**
 * In a worker of `startCluster()`: asks the primary to replace this worker (after N requests,
 * say). The replacement starts, listens warm, and only then is this worker told to retire.
 * Returns false, and does nothing, anywhere else (outside a cluster, under pm2).
 */
export function requestRecycle (): boolean {
  return tellPrimary('recycle')
}

export type { ForkSafeCluster }
export type { ClusterLogger, ClusterOptions } from './options'
