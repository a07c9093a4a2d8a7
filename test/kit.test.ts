import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { createConnection, type Connection } from 'mysql2/promise'
import { GaleraCluster, requireGalera } from '../support/galera-cluster'
import { ReplicationPair } from '../support/replication-pair'

// The test kit itself (support/replication-pair.ts, support/galera-cluster.ts): real servers
// that replicate, switch roles, die, freeze and come back, and leave nothing behind. This file
// measures the kit's boot times and a kill's write stall for the README, so it prints them.

// A Galera join is a state transfer; on a busy two-core machine a boot takes tens of seconds.
jest.setTimeout(180_000)

const READ_ONLY = 1290

/** The pids among `pids` that still run (`ps` prints nothing for a pid that is gone). */
function running (pids: number[]): number[] {
  const listed = spawnSync('ps', ['-o', 'pid=', '-p', pids.join(',')], { encoding: 'utf8' }).stdout
  return listed.split('\n').map((line) => Number(line.trim())).filter((pid) => pid > 0)
}

async function insertOn (connection: Connection, note: string): Promise<void> {
  await connection.query('INSERT INTO kit (note) VALUES (?)', [note])
}

describe('ReplicationPair', () => {
  let pair: ReplicationPair

  beforeAll(async () => {
    const started = performance.now()
    pair = await ReplicationPair.start()
    console.log(`replication pair (primary + 1 replica) booted in ${Math.round(performance.now() - started)} ms`)
    await pair.primary.query('CREATE TABLE test.kit (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(40) NOT NULL)')
  })
  afterAll(async () => { await pair?.close() })

  test('replicates a write on the primary to the replica by GTID', async () => {
    await pair.primary.query("INSERT INTO test.kit (note) VALUES ('replicated')")
    await pair.waitForReplica()

    expect(await pair.replica.query("SELECT note FROM test.kit WHERE note = 'replicated'")).toEqual([{ note: 'replicated' }])
    const [status] = await pair.replica.query('SHOW SLAVE STATUS')
    expect(status.Using_Gtid).toBe('Slave_Pos')
  })

  test('stopReplicaSql() leaves Seconds_Behind_Master NULL and the replica applies nothing until startReplica()', async () => {
    await pair.stopReplicaSql()
    await pair.primary.query("INSERT INTO test.kit (note) VALUES ('while stopped')")
    const [{ position }] = await pair.primary.query('SELECT @@GLOBAL.gtid_binlog_pos AS position')

    const [status] = await pair.replica.query('SHOW SLAVE STATUS')
    expect(status.Slave_SQL_Running).toBe('No')
    expect(status.Seconds_Behind_Master).toBeNull()
    // The server's own wait: -1 when the position is not applied within the (short) timeout.
    expect(await pair.replica.query('SELECT MASTER_GTID_WAIT(?, 0.5) AS waited', [position])).toEqual([{ waited: -1 }])

    await pair.startReplica()
    expect(await pair.replica.query('SELECT MASTER_GTID_WAIT(?, 30) AS waited', [position])).toEqual([{ waited: 0 }])
    expect(await pair.replica.query("SELECT note FROM test.kit WHERE note = 'while stopped'")).toHaveLength(1)
  })

  test('a replica killed and started again catches up with the primary', async () => {
    await pair.replica.kill()
    await pair.primary.query("INSERT INTO test.kit (note) VALUES ('while the replica was down')")
    await pair.replica.start()
    await pair.waitForReplica()

    expect(await pair.replica.query("SELECT note FROM test.kit WHERE note = 'while the replica was down'")).toHaveLength(1)
  })

  // Last before close(): the write on the promoted replica diverges the pair's data.
  test('switchover() makes the old primary refuse a write with 1290 and the replica accept one', async () => {
    const onPrimary = await createConnection({ uri: pair.primary.url })
    const onReplica = await createConnection({ uri: pair.replica.url })
    try {
      await pair.switchover()

      await expect(insertOn(onPrimary, 'refused')).rejects.toMatchObject({ errno: READ_ONLY })
      await insertOn(onReplica, 'on the new primary')
      expect(await pair.replica.query("SELECT note FROM test.kit WHERE note = 'on the new primary'")).toHaveLength(1)
    } finally {
      await onPrimary.end()
      await onReplica.end()
      await pair.primary.promote()
      await pair.replica.demote()
    }
  })

  test('close() leaves no server process and no datadir', async () => {
    const pids = pair.nodes.map((node) => node.pid ?? 0)
    const directories = pair.nodes.map((node) => node.root)
    expect(running(pids)).toHaveLength(pids.length)

    await pair.close()

    expect(running(pids)).toEqual([])
    expect(directories.filter((directory) => existsSync(directory))).toEqual([])
  })
})

describe('GaleraCluster', () => {
  let cluster: GaleraCluster

  beforeAll(async () => {
    requireGalera()
    const started = performance.now()
    cluster = await GaleraCluster.start({ nodes: 3 })
    console.log(`Galera cluster (3 nodes, rsync SST) booted and Synced in ${Math.round(performance.now() - started)} ms`)
    await cluster.node(1).query('CREATE TABLE test.kit (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(40) NOT NULL)')
  })
  afterAll(async () => { await cluster?.close() })

  /** Reads on `index` after every write the cluster had committed (wsrep_sync_wait: no poll). */
  async function notesOn (index: number): Promise<string[]> {
    const connection = await createConnection({ uri: cluster.node(index).url })
    try {
      await connection.query('SET SESSION wsrep_sync_wait = 1')
      const [rows] = await connection.query('SELECT note FROM kit ORDER BY id')
      return (rows as Array<{ note: string }>).map((row) => row.note)
    } finally {
      await connection.end()
    }
  }

  test('starts three nodes, each Synced and ready in a cluster of three', async () => {
    for (const node of cluster.nodes) {
      const rows = await node.query("SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state', 'wsrep_ready', 'wsrep_cluster_size', 'wsrep_cluster_status')")
      expect(Object.fromEntries(rows.map((row) => [row.Variable_name, row.Value]))).toEqual({
        wsrep_local_state: '4', wsrep_ready: 'ON', wsrep_cluster_size: '3', wsrep_cluster_status: 'Primary'
      })
    }
  })

  test('a write on node 1 is read on node 3', async () => {
    const onFirst = await createConnection({ uri: cluster.node(1).url })
    await insertOn(onFirst, 'written on node 1')
    await onFirst.end()

    expect(await notesOn(3)).toContain('written on node 1')
  })

  test('after node 1 is SIGKILLed, the two survivors form a primary component and take writes', async () => {
    const onSecond = await createConnection({ uri: cluster.node(2).url })
    try {
      await cluster.node(1).kill()
      const killed = performance.now()
      // The survivors hold writes (or refuse them with 1047) until they evict the dead node:
      // retry until one is acknowledged, which is the stall a client sees.
      let failures = 0
      for (;;) {
        try {
          await insertOn(onSecond, 'after the kill')
          break
        } catch (error) {
          failures++
          if (performance.now() - killed > 60_000) throw error
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
      }
      console.log(`Galera write stall after a SIGKILL (kit eviction settings): ${Math.round(performance.now() - killed)} ms, ${failures} refused attempts`)
    } finally {
      await onSecond.end()
    }

    await cluster.node(2).waitForSize(2)
    const status = await cluster.node(3).query("SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_size', 'wsrep_cluster_status')")
    expect(Object.fromEntries(status.map((row) => [row.Variable_name, row.Value]))).toEqual({ wsrep_cluster_size: '2', wsrep_cluster_status: 'Primary' })
    expect(await notesOn(3)).toContain('after the kill')
  })

  test('start() brings the killed node back: it rejoins, is Synced and has the writes it missed', async () => {
    const started = performance.now()
    await cluster.node(1).start()
    await cluster.node(1).waitSynced()
    console.log(`Galera node rejoined (state transfer) and Synced in ${Math.round(performance.now() - started)} ms`)

    await cluster.node(1).waitForSize(3)
    expect(await notesOn(1)).toEqual(['written on node 1', 'after the kill'])
  })

  test('a frozen node answers nothing until thaw(), then is Synced again', async () => {
    const node = cluster.node(3)
    await node.freeze()
    try {
      // The kernel still accepts the TCP connection; the server never sends its handshake.
      await expect(createConnection({ uri: node.url, connectTimeout: 500 })).rejects.toMatchObject({ code: 'ETIMEDOUT' })
    } finally {
      await node.thaw()
    }
    await node.waitSynced()
    await cluster.node(1).waitForSize(3)
    expect(await notesOn(3)).toContain('after the kill')
  })

  test('close() leaves no mariadbd process and no datadir, even with a node frozen', async () => {
    const pids = cluster.nodes.map((node) => node.pid ?? 0)
    const directories = cluster.nodes.map((node) => node.directory)
    expect(running(pids)).toHaveLength(pids.length)
    await cluster.node(2).freeze()

    await cluster.close()

    expect(running(pids)).toEqual([])
    expect(directories.filter((directory) => existsSync(directory))).toEqual([])
  })
})
