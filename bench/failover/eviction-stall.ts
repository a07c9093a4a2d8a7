import { createConnection, type Connection } from 'mysql2/promise'
import { DEFAULT_EVICTION, FAST_EVICTION, GaleraCluster } from '../../support/galera-cluster'
import { median, table } from '../rig/report'

// `npm run bench:failover`: what Galera's failure detection (`evs.*`) costs a client when a node
// dies. For each setting, a 3-node cluster (support/galera-cluster.ts), a direct connection to a
// survivor, a SIGKILL of another node, then a tiny INSERT looped on the survivor from the kill
// until one is acknowledged: the survivors' write stall, which no client library can shorten
// (test/galera-failover.test.ts shows the plugin's first success follows it closely).
// BENCH_RUNS kills (node 1, started again and Synced between runs) per setting. Each setting
// boots its own cluster (tens of seconds). Method: bench/README.md.

const RUNS = Number(process.env.BENCH_RUNS ?? 3)

const SETTINGS: ReadonlyArray<{ name: string, eviction: string }> = [
  { name: 'kit (FAST_EVICTION)', eviction: FAST_EVICTION },
  { name: 'Galera defaults', eviction: DEFAULT_EVICTION }
]

/** From the kill on, INSERTs on `connection` until one is acknowledged; resolves with the stall and the refused attempts. */
async function stallAfterKill (cluster: GaleraCluster, connection: Connection): Promise<{ stallMillis: number, refused: number }> {
  const killedAt = performance.now()
  const killing = cluster.node(1).kill()
  let refused = 0
  for (;;) {
    try {
      await connection.query('INSERT INTO test.stall () VALUES ()')
      break
    } catch {
      // 1047 while the survivors form a new primary component.
      refused++
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }
  const stallMillis = performance.now() - killedAt
  await killing
  return { stallMillis, refused }
}

async function measure (eviction: string): Promise<Array<{ stallMillis: number, refused: number }>> {
  const cluster = await GaleraCluster.start({ nodes: 3, eviction })
  try {
    await cluster.node(2).query('CREATE TABLE test.stall (id INT AUTO_INCREMENT PRIMARY KEY)')
    const results = []
    for (let run = 0; run < RUNS; run++) {
      const connection = await createConnection({ uri: cluster.node(2).url })
      try {
        results.push(await stallAfterKill(cluster, connection))
      } finally {
        await connection.end()
      }
      await cluster.node(1).start()
      await cluster.node(1).waitSynced()
      await cluster.node(2).waitForSize(3)
    }
    return results
  } finally {
    await cluster.close()
  }
}

async function main (): Promise<void> {
  const rows: Array<Array<string | number>> = []
  for (const setting of SETTINGS) {
    const results = await measure(setting.eviction)
    const stalls = results.map((result) => result.stallMillis)
    rows.push([
      setting.name,
      setting.eviction === '' ? '(none: suspect PT5S, inactive PT15S, keepalive PT1S)' : `\`${setting.eviction}\``,
      Math.round(median(stalls)),
      `${Math.round(Math.min(...stalls))}-${Math.round(Math.max(...stalls))}`,
      results.map((result) => result.refused).join('/')
    ])
  }
  console.log(`Galera write stall on a survivor after a SIGKILL of another node (3 nodes, loopback, ${RUNS} kills per setting)\n`)
  console.log(table(['evs setting', 'provider options', 'median stall (ms)', 'range (ms)', 'refused attempts per kill'], rows))
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
