import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createConnection, type Connection } from 'mysql2/promise'
import { APP_USER, CREATE_APP_USER, findServerBinaries, freePort, Mariadbd, type Row } from './mariadbd'

// A Galera cluster of throw-away mariadbd nodes on loopback ports, for tests that kill, stop,
// freeze or demote a node of a multi-primary cluster. Each node has its own datadir and ports
// (SQL, gcomm, IST, rsync SST) and runs as the `mysql` user when this process is root: as root,
// the rsync state transfer fails with "Permission denied". The first node bootstraps the
// cluster; the others join it by state transfer (SST), as does a node started again after a
// kill or stop (IST when a donor's cache still holds what it missed).
// Each node's `url` names a user without SUPER (see APP_USER); `query()` runs as root.

export const GALERA_PROVIDER = '/usr/lib/galera/libgalera_smm.so'

/**
 * Failure detection that evicts a dead node in about 2 s (the survivors' writes stall until
 * then); Galera's defaults (suspect 5 s, inactive 15 s, keepalive 1 s) stall them about 5-6 s.
 * The join messages are resent faster than the install timeout expires: with the default 1 s
 * period the survivors of a kill on a busy machine never agreed on a new view.
 */
export const FAST_EVICTION = 'evs.suspect_timeout=PT1S;evs.inactive_timeout=PT2S;evs.keepalive_period=PT0.3S;evs.join_retrans_period=PT0.3S'
/** Galera's own failure detection settings. */
export const DEFAULT_EVICTION = ''

const POLL_MILLIS = 50
const WAIT_MILLIS = 60_000
// A joiner's start includes its state transfer.
const READY_TIMEOUT_MILLIS = 90_000
const SYNCED = '4'
// The default redo log (96 MB) is written at install and copied by every state transfer.
const SMALL_REDO_LOG = ['--innodb-log-file-size=8M']

export interface GaleraClusterOptions {
  /** How many nodes. Default 3. */
  nodes?: number
  /** Galera provider options for failure detection (`evs.*`). Default FAST_EVICTION. */
  eviction?: string
}

/**
 * Throws, naming the package to install, unless mariadbd, the Galera provider, rsync and a socket
 * lister (the state transfer script's `ss` or `lsof`) are installed.
 */
export function requireGalera (): void {
  const missing: string[] = []
  if (findServerBinaries() === undefined) missing.push('mariadb-server (mariadbd)')
  if (!existsSync(GALERA_PROVIDER)) missing.push(`galera-4 (${GALERA_PROVIDER})`)
  const onPath = (name: string) => ['/usr/bin', '/bin', '/usr/sbin', '/sbin', ...(process.env.PATH ?? '').split(':')]
    .some((directory) => directory !== '' && existsSync(`${directory}/${name}`))
  if (!onPath('rsync')) missing.push('rsync')
  if (!onPath('ss') && !onPath('lsof')) missing.push('iproute2 (ss)')
  if (missing.length > 0) {
    throw new Error(`A Galera cluster needs ${missing.join(', ')}: run \`apt-get install -y galera-4 rsync iproute2 mariadb-server\`.`)
  }
}

async function distinctPorts (count: number): Promise<number[]> {
  const ports = new Set<number>()
  while (ports.size < count) ports.add(await freePort())
  return [...ports]
}

async function statusValue (connection: Connection, name: string): Promise<string | undefined> {
  const [rows] = await connection.query('SHOW GLOBAL STATUS LIKE ?', [name])
  const row = (rows as Row[])[0]
  return row === undefined ? undefined : String(row.Value)
}

/** Polls `check` on a root connection to `port` until it is true; the server offers no event for these states. */
async function pollUntil (port: number, what: string, timeoutMillis: number, check: (connection: Connection) => Promise<boolean>): Promise<void> {
  const deadline = performance.now() + timeoutMillis
  let lastError: unknown
  while (performance.now() < deadline) {
    let connection: Connection | undefined
    try {
      connection = await createConnection({ host: '127.0.0.1', port, user: 'root', connectTimeout: 2000 })
      while (performance.now() < deadline) {
        if (await check(connection)) return
        await new Promise((resolve) => setTimeout(resolve, POLL_MILLIS))
      }
    } catch (error) {
      // A node that is starting or leaving may refuse or drop the connection: try again.
      lastError = error
      await new Promise((resolve) => setTimeout(resolve, POLL_MILLIS))
    } finally {
      await connection?.end().catch(() => {})
    }
  }
  throw new Error(`the Galera node on port ${port} was not ${what} within ${timeoutMillis} ms${lastError instanceof Error ? ` (last error: ${lastError.message})` : ''}`)
}

export class GaleraNode {
  /** 1-based, in the order of the cluster address. */
  readonly index: number
  readonly gcommPort: number
  readonly istPort: number
  readonly sstPort: number
  readonly #server: Mariadbd

  constructor (index: number, server: Mariadbd, ports: { gcomm: number, ist: number, sst: number }) {
    this.index = index
    this.#server = server
    this.gcommPort = ports.gcomm
    this.istPort = ports.ist
    this.sstPort = ports.sst
  }

  /** The SQL port. */
  get port (): number {
    return this.#server.port
  }

  /** URL of the `test` database as the application user (no SUPER: read_only applies). */
  get url (): string {
    return this.#server.url
  }

  get pid (): number | undefined {
    return this.#server.pid
  }

  /** The node's temp directory (datadir, socket, tmpdir). */
  get directory (): string {
    return this.#server.root
  }

  /** The tail of the node's error log since its last start (why a join failed). */
  get log (): string {
    return this.#server.log
  }

  /** Starts this node as a new cluster: only when no node of the cluster runs. */
  async bootstrap (): Promise<void> {
    await this.#server.start(['--wsrep-new-cluster'])
  }

  /**
   * Starts the node, which joins the cluster. After a crash its saved position is unknown
   * (seqno -1), and a join from an unknown position is a full state transfer; so, as Galera's
   * own galera_recovery does, it first recovers the position from InnoDB, and the join becomes
   * an incremental one (IST) when the donor's cache still holds what the node missed.
   */
  async start (): Promise<void> {
    await this.#server.start(await this.#recoveredPosition())
  }

  async #recoveredPosition (): Promise<string[]> {
    const saved = await readFile(join(this.#server.datadir, 'grastate.dat'), 'utf8').catch(() => '')
    if (!/^seqno:\s*-1\s*$/m.test(saved)) return []
    const { log } = await this.#server.runToExit(['--wsrep-recover'])
    const position = /WSREP: Recovered position: (\S+:\d+)/.exec(log)?.[1]
    return position === undefined ? [] : [`--wsrep-start-position=${position}`]
  }

  kill (): Promise<void> { return this.#server.kill() }
  stop (): Promise<void> { return this.#server.stop() }
  freeze (): Promise<void> { return this.#server.freeze() }
  thaw (): Promise<void> { return this.#server.thaw() }
  demote (): Promise<void> { return this.#server.demote() }
  promote (): Promise<void> { return this.#server.promote() }
  query (sql: string, values?: unknown[]): Promise<Row[]> { return this.#server.query(sql, values) }
  destroy (): Promise<void> { return this.#server.destroy() }

  /** Resolves once the node is Synced (`wsrep_local_state` = 4) and `wsrep_ready` = ON. */
  async waitSynced (timeoutMillis = WAIT_MILLIS): Promise<void> {
    await pollUntil(this.port, 'Synced', timeoutMillis, async (connection) =>
      await statusValue(connection, 'wsrep_local_state') === SYNCED && await statusValue(connection, 'wsrep_ready') === 'ON')
  }

  /** Resolves once this node sees a cluster (its component) of `size` nodes. */
  async waitForSize (size: number, timeoutMillis = WAIT_MILLIS): Promise<void> {
    await pollUntil(this.port, `in a cluster of ${size}`, timeoutMillis, async (connection) =>
      await statusValue(connection, 'wsrep_cluster_size') === String(size))
  }
}

export class GaleraCluster {
  readonly nodes: readonly GaleraNode[]

  private constructor (nodes: readonly GaleraNode[]) {
    this.nodes = nodes
  }

  /** Node `index`, 1-based as in the cluster address. */
  node (index: number): GaleraNode {
    const node = this.nodes[index - 1]
    if (node === undefined) throw new Error(`no Galera node ${index}: the cluster has ${this.nodes.length}`)
    return node
  }

  /**
   * Boots node 1 as a new cluster, then joins the others; resolves once every node is Synced,
   * with the `test` database and the application user in place.
   */
  static async start (options: GaleraClusterOptions = {}): Promise<GaleraCluster> {
    requireGalera()
    const count = options.nodes ?? 3
    if (!Number.isInteger(count) || count < 1) throw new Error(`nodes must be a positive integer, got ${String(count)}`)
    const eviction = options.eviction ?? FAST_EVICTION
    const ports = await distinctPorts(count * 4)
    const portsOf = (index: number) => ({ sql: ports[index * 4], gcomm: ports[index * 4 + 1], ist: ports[index * 4 + 2], sst: ports[index * 4 + 3] })
    const address = `gcomm://${Array.from({ length: count }, (_, index) => `127.0.0.1:${portsOf(index).gcomm}`).join(',')}`
    const nodes: GaleraNode[] = []
    try {
      for (let index = 0; index < count; index++) {
        const own = portsOf(index)
        const providerOptions = [
          'base_host=127.0.0.1', `base_port=${own.gcomm}`, `gmcast.listen_addr=tcp://127.0.0.1:${own.gcomm}`,
          `ist.recv_addr=127.0.0.1:${own.ist}`, 'gcache.size=16M', ...(eviction === '' ? [] : [eviction])
        ].join(';')
        const server = await Mariadbd.create({
          port: own.sql,
          asMysqlUser: true,
          urlUser: APP_USER,
          readyTimeoutMillis: READY_TIMEOUT_MILLIS,
          // A joiner receives its whole datadir from a donor.
          initialise: index === 0,
          serverArguments: [
            '--wsrep-on=ON', `--wsrep-provider=${GALERA_PROVIDER}`, '--wsrep-cluster-name=fork-safe-db-kit',
            `--wsrep-cluster-address=${address}`, `--wsrep-node-name=node${index + 1}`,
            `--wsrep-node-address=127.0.0.1:${own.gcomm}`, `--wsrep-node-incoming-address=127.0.0.1:${own.sql}`,
            `--wsrep-provider-options=${providerOptions}`,
            '--wsrep-sst-method=rsync', `--wsrep-sst-receive-address=127.0.0.1:${own.sst}`,
            '--binlog-format=ROW', '--default-storage-engine=InnoDB', '--innodb-autoinc-lock-mode=2',
            // Tests, not durability: the cluster's copies are the durability.
            '--innodb-flush-log-at-trx-commit=2', ...SMALL_REDO_LOG
          ],
          installArguments: SMALL_REDO_LOG
        })
        nodes.push(new GaleraNode(index + 1, server, own))
      }
      const cluster = new GaleraCluster(nodes)
      const [first, ...joiners] = nodes
      await first.bootstrap()
      await first.waitSynced()
      await first.query('CREATE DATABASE test')
      for (const statement of CREATE_APP_USER) await first.query(statement)
      // Joiners start together: most of a join is the state transfer script's own set-up, and
      // a joiner that finds the donor busy retries every second.
      await Promise.all(joiners.map(async (node) => {
        await node.start()
        await node.waitSynced()
      }))
      await nodes[0].waitForSize(count)
      return cluster
    } catch (error) {
      await Promise.allSettled(nodes.map((node) => node.destroy()))
      throw error
    }
  }

  /** SIGKILLs every node (thawing a frozen one first) and deletes their datadirs. */
  async close (): Promise<void> {
    const results = await Promise.allSettled(this.nodes.map((node) => node.destroy()))
    const failed = results.find((result) => result.status === 'rejected')
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason
  }
}
