import { createConnection, type Connection } from 'mysql2/promise'
import { APP_USER, CREATE_APP_USER, Mariadbd } from './mariadbd'

// A primary and its replica(s), each a throw-away mariadbd on a loopback port, replicating with
// GTIDs (`MASTER_USE_GTID=slave_pos`), for tests that demote, promote, stop replication or crash
// a node. Replicas start read-only, as a real one would. `switchover()` swaps the roles without
// moving data (read_only on the old primary, off on the replica); `primary` and `replica` keep
// naming the nodes as they were started. Each node's `url` names a user without SUPER (see
// APP_USER), so read_only refuses its writes; `query()` runs as root.

const POLL_MILLIS = 25
const WAIT_FOR_REPLICA_MILLIS = 10_000

export interface ReplicationPairOptions {
  /** How many replicas follow the primary. Default 1. */
  replicas?: number
}

function replicationArguments (serverId: number): string[] {
  return [`--server-id=${serverId}`, '--log-bin=mysql-bin', '--binlog-format=ROW', '--relay-log=relay-bin']
}

/** A GTID position (`0-1-5,1-2-7`) as its highest sequence number per replication domain. */
function sequenceByDomain (position: string): Map<string, bigint> {
  const sequences = new Map<string, bigint>()
  for (const gtid of position.split(',').map((part) => part.trim()).filter((part) => part !== '')) {
    const [domain, , sequence] = gtid.split('-')
    const current = sequences.get(domain)
    const value = BigInt(sequence)
    if (current === undefined || value > current) sequences.set(domain, value)
  }
  return sequences
}

/** True when `applied` has reached every domain's sequence number of `written`. */
function hasApplied (applied: string, written: string): boolean {
  const reached = sequenceByDomain(applied)
  for (const [domain, sequence] of sequenceByDomain(written)) {
    if ((reached.get(domain) ?? -1n) < sequence) return false
  }
  return true
}

async function singleValue (connection: Connection, sql: string): Promise<string> {
  const [rows] = await connection.query(sql)
  const row = (rows as Array<Record<string, unknown>>)[0]
  return String(Object.values(row)[0] ?? '')
}

export class ReplicationPair {
  readonly primary: Mariadbd
  readonly replicas: readonly Mariadbd[]

  private constructor (primary: Mariadbd, replicas: readonly Mariadbd[]) {
    this.primary = primary
    this.replicas = replicas
  }

  /** The first replica. */
  get replica (): Mariadbd {
    return this.replicas[0]
  }

  /** Every node: the primary first. */
  get nodes (): readonly Mariadbd[] {
    return [this.primary, ...this.replicas]
  }

  /** Starts a primary and its replicas, creates the `test` database and waits until every replica has it. */
  static async start (options: ReplicationPairOptions = {}): Promise<ReplicationPair> {
    const replicaCount = options.replicas ?? 1
    if (!Number.isInteger(replicaCount) || replicaCount < 1) throw new Error(`replicas must be a positive integer, got ${String(replicaCount)}`)
    const created = await Promise.allSettled([
      Mariadbd.create({ serverArguments: replicationArguments(1), urlUser: APP_USER }),
      ...Array.from({ length: replicaCount }, (_, index) => Mariadbd.create({ serverArguments: [...replicationArguments(index + 2), '--read-only=1'], urlUser: APP_USER }))
    ])
    const nodes = created.flatMap((result) => result.status === 'fulfilled' ? [result.value] : [])
    const pair = nodes.length === created.length ? new ReplicationPair(nodes[0], nodes.slice(1)) : undefined
    try {
      const failed = created.find((result) => result.status === 'rejected')
      if (pair === undefined) throw (failed as PromiseRejectedResult).reason
      await Promise.all(nodes.map((node) => node.start()))
      await Promise.all(pair.replicas.map((replica) => replica.query(
        "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = ?, MASTER_USER = 'root', MASTER_PASSWORD = '', " +
        'MASTER_CONNECT_RETRY = 1, MASTER_USE_GTID = slave_pos', [pair.primary.port])))
      await Promise.all(pair.replicas.map((replica) => replica.query('START SLAVE')))
      // Written on the primary, so the replicas receive them as they would any write.
      await pair.primary.query('CREATE DATABASE test')
      for (const statement of CREATE_APP_USER) await pair.primary.query(statement)
      await Promise.all(pair.replicas.map((replica) => pair.waitForReplica(replica)))
    } catch (error) {
      await Promise.allSettled(nodes.map((node) => node.destroy()))
      throw error
    }
    return pair
  }

  /** Demotes the primary (read_only=1) and promotes the replica (read_only=0): a role swap without moving data. */
  async switchover (replica: Mariadbd = this.replica): Promise<void> {
    await this.primary.demote()
    await replica.promote()
  }

  /** `STOP SLAVE SQL_THREAD`: the replica keeps receiving the primary's events but applies none. */
  async stopReplicaSql (replica: Mariadbd = this.replica): Promise<void> {
    await replica.query('STOP SLAVE SQL_THREAD')
  }

  /** `START SLAVE`: both replication threads run again. */
  async startReplica (replica: Mariadbd = this.replica): Promise<void> {
    await replica.query('START SLAVE')
  }

  /**
   * Resolves once the replica has applied everything the primary has written (its
   * `@@gtid_slave_pos` reaches the primary's `@@gtid_binlog_pos`). The server offers no event
   * for this, so it polls, and gives up after `timeoutMillis`.
   */
  async waitForReplica (replica: Mariadbd = this.replica, timeoutMillis = WAIT_FOR_REPLICA_MILLIS): Promise<void> {
    const primary = await createConnection({ host: '127.0.0.1', port: this.primary.port, user: 'root' })
    try {
      const follower = await createConnection({ host: '127.0.0.1', port: replica.port, user: 'root' })
      try {
        const written = await singleValue(primary, 'SELECT @@GLOBAL.gtid_binlog_pos')
        const deadline = performance.now() + timeoutMillis
        let applied = await singleValue(follower, 'SELECT @@GLOBAL.gtid_slave_pos')
        while (!hasApplied(applied, written)) {
          if (performance.now() > deadline) {
            throw new Error(`the replica on port ${replica.port} applied ${applied || 'nothing'} of the primary's ${written} in ${timeoutMillis} ms`)
          }
          await new Promise((resolve) => setTimeout(resolve, POLL_MILLIS))
          applied = await singleValue(follower, 'SELECT @@GLOBAL.gtid_slave_pos')
        }
      } finally {
        await follower.end()
      }
    } finally {
      await primary.end()
    }
  }

  /** SIGKILLs every node (thawing a frozen one first) and deletes their temp directories. */
  async close (): Promise<void> {
    const results = await Promise.allSettled(this.nodes.map((node) => node.destroy()))
    const failed = results.find((result) => result.status === 'rejected')
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason
  }
}
