import cluster from 'node:cluster'

// How the primary spreads connections over its workers. Node's default on Linux is round-robin
// (SCHED_RR): the primary accepts every connection and hands it to a worker. The example
// defaults to SCHED_NONE on Linux instead: the workers accept from the shared listening socket
// themselves. Measured (README, "Scheduling policy"): with fastify-fork-safe-db/worker both
// lose nothing when workers retire, but under SCHED_RR every worker killed under load leaves
// the primary holding the connection it was handing over (6 of 6 kills, 3 runs): its client
// hangs and the descriptor leaks, which nothing outside Node can prevent. Under SCHED_NONE
// nothing is held. The price: a burst of keep-alive connections can all land on one worker.
// NODE_CLUSTER_SCHED_POLICY=rr or none, when set, wins.

export function chooseSchedulingPolicy (): 'rr' | 'none' {
  if (process.env.NODE_CLUSTER_SCHED_POLICY === undefined && process.platform === 'linux') {
    // Read by cluster.setupPrimary() at the first fork, so this must come before it.
    cluster.schedulingPolicy = cluster.SCHED_NONE
  }
  return cluster.schedulingPolicy === cluster.SCHED_RR ? 'rr' : 'none'
}
