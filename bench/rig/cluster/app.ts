import cluster from 'node:cluster'
import { runPrimary } from './primary'
import { runWorker } from './worker'

// The respawn benchmark's app (bench/rig/cluster/): a node:cluster primary that recycles its
// workers every MAX_REQUESTS responses, each replacement listening before its predecessor
// retires, and workers that serve one users route through the plugin or through plain knex.
// Started by bench/rig/cluster/process.ts, which it reports to.

const run = cluster.isPrimary ? runPrimary : runWorker
run().catch((error: unknown) => {
  process.stderr.write(`cluster app (${cluster.isPrimary ? 'primary' : 'worker'} ${process.pid}) failed: ` +
    `${String((error as Error)?.stack ?? error)}\n`)
  process.exit(1)
})
