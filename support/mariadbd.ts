import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, rmSync } from 'node:fs'
import { chown, mkdir, mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

// One throw-away mariadbd (or mysqld) in a temp directory on a free loopback port: the part the
// private server, the replication pair and the Galera cluster share. It finds the binaries,
// initialises a datadir, starts the process and waits until it accepts connections, signals it,
// and removes everything; a process 'exit' hook SIGKILLs what a crashed test left running.

const SEARCH_PATH = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/usr/local/mysql/bin']
const READY_TIMEOUT_MILLIS = 30_000
// Enough of the server's log to explain a failed start or join, without growing for ever.
const LOG_TAIL_CHARACTERS = 64 * 1024

export interface ServerBinaries { server: string, installDb: string }

/** A row of a direct query's result. */
export type Row = Record<string, unknown>

function findBinary (names: readonly string[]): string | undefined {
  for (const directory of SEARCH_PATH) {
    for (const name of names) {
      const candidate = join(directory, name)
      if (directory !== '' && existsSync(candidate)) return candidate
    }
  }
  return undefined
}

/** The server binaries, or undefined when none is installed. */
export function findServerBinaries (): ServerBinaries | undefined {
  const server = findBinary(['mariadbd', 'mysqld'])
  const installDb = findBinary(['mariadb-install-db', 'mysql_install_db'])
  return server !== undefined && installDb !== undefined ? { server, installDb } : undefined
}

export function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address()
      probe.close(() => typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port')))
    })
  })
}

// The safety net: a test that crashes (or a Jest worker that exits) before close() must not
// leave servers running or datadirs behind. Registered only while something is alive, so test
// files that run one after another in a worker do not pile up listeners.
const alive = new Set<ChildProcess>()
const roots = new Set<string>()

function onExit (): void {
  for (const child of alive) {
    child.kill('SIGCONT')
    child.kill('SIGKILL')
  }
  for (const root of roots) rmSync(root, { recursive: true, force: true })
}

function track (): void {
  if (alive.size + roots.size > 0) {
    if (!process.listeners('exit').includes(onExit)) process.on('exit', onExit)
  } else {
    process.off('exit', onExit)
  }
}

function systemUser (name: string): { uid: number, gid: number } | undefined {
  const uid = spawnSync('id', ['-u', name], { encoding: 'utf8' })
  const gid = spawnSync('id', ['-g', name], { encoding: 'utf8' })
  if (uid.status !== 0 || gid.status !== 0) return undefined
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) }
}

async function chownTree (path: string, owner: { uid: number, gid: number }): Promise<void> {
  const result = spawnSync('chown', ['-R', `${owner.uid}:${owner.gid}`, path], { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`chown -R ${path} failed: ${result.stderr}`)
  await chown(path, owner.uid, owner.gid)
}

export interface MariadbdOptions {
  /** Server options beyond those every node gets (datadir, port, socket, tmpdir, ...). */
  serverArguments?: readonly string[]
  /**
   * Run as the `mysql` system user, with mysql-owned files, when this process is root (Galera's
   * rsync state transfer fails as root). Otherwise the server runs as the current user.
   */
  asMysqlUser?: boolean
  /** How long a start may take until the server accepts connections. Default 30 s. */
  readyTimeoutMillis?: number
  /** A port chosen by the caller (the cluster needs every node's address before any starts). */
  port?: number
  /** The user `url` names (no password; the caller creates it). Default `root`. */
  urlUser?: string
}

/**
 * The user of the replication pair's and the Galera cluster's `url`s: every privilege but SUPER
 * and READ_ONLY ADMIN, either of which lets writes through `read_only` (MariaDB 10.11's root
 * has both), so a demoted node answers it 1290 as it would an application.
 */
export const APP_USER = 'app'
export const CREATE_APP_USER = [
  `CREATE USER IF NOT EXISTS '${APP_USER}'@'%'`,
  `GRANT ALL PRIVILEGES ON *.* TO '${APP_USER}'@'%'`,
  `REVOKE SUPER, READ_ONLY ADMIN ON *.* FROM '${APP_USER}'@'%'`
] as const

export class Mariadbd {
  readonly port: number
  /** The temp directory: `data/`, `tmp/`, the socket and the pid file. */
  readonly root: string
  readonly #binaries: ServerBinaries
  readonly #serverArguments: readonly string[]
  readonly #owner: { uid: number, gid: number } | undefined
  readonly #readyTimeoutMillis: number
  readonly #urlUser: string
  #process: ChildProcess | undefined
  #log = ''

  private constructor (port: number, root: string, binaries: ServerBinaries, options: MariadbdOptions, owner: { uid: number, gid: number } | undefined) {
    this.port = port
    this.root = root
    this.#binaries = binaries
    this.#serverArguments = options.serverArguments ?? []
    this.#owner = owner
    this.#readyTimeoutMillis = options.readyTimeoutMillis ?? READY_TIMEOUT_MILLIS
    this.#urlUser = options.urlUser ?? 'root'
  }

  /** Initialises a datadir in a new temp directory; does not start the server. */
  static async create (options: MariadbdOptions = {}): Promise<Mariadbd> {
    const binaries = findServerBinaries()
    if (binaries === undefined) {
      throw new Error('No mariadbd or mysqld is installed: set MYSQL_URL to a server, or run `apt-get install mariadb-server`.')
    }
    const owner = options.asMysqlUser === true && process.getuid?.() === 0 ? systemUser('mysql') : undefined
    if (options.asMysqlUser === true && process.getuid?.() === 0 && owner === undefined) {
      throw new Error('No `mysql` system user: install mariadb-server, which creates it.')
    }
    const root = await mkdtemp(join(tmpdir(), 'fork-safe-db-'))
    roots.add(root)
    track()
    const node = new Mariadbd(options.port ?? await freePort(), root, binaries, options, owner)
    try {
      await mkdir(join(root, 'tmp'))
      await mkdir(join(root, 'data'))
      if (owner !== undefined) await chownTree(root, owner)
      const init = spawnSync(binaries.installDb, [
        '--no-defaults', `--datadir=${node.datadir}`, '--auth-root-authentication-method=normal',
        '--skip-test-db', ...node.#userArguments()
      ], { encoding: 'utf8', env: node.#environment() })
      if (init.status !== 0) throw new Error(`${binaries.installDb} failed (${String(init.status)}): ${init.stderr}`)
    } catch (error) {
      await node.remove()
      throw error
    }
    return node
  }

  /** The server's data directory. */
  get datadir (): string {
    return join(this.root, 'data')
  }

  /** URL (no password; root unless `urlUser` says otherwise) of the `test` database on this server. */
  get url (): string {
    return `mysql://${this.#urlUser}@127.0.0.1:${this.port}/test`
  }

  /** The server's process id while it runs. */
  get pid (): number | undefined {
    return this.#process?.pid
  }

  /** The tail of the server's error log (stderr) since its last start. */
  get log (): string {
    return this.#log
  }

  // mariadbd takes its default tmpdir from TMPDIR: the bootstrap run by install-db needs it too.
  #environment (): NodeJS.ProcessEnv {
    return { ...process.env, TMPDIR: join(this.root, 'tmp') }
  }

  #userArguments (): string[] {
    if (this.#owner !== undefined) return ['--user=mysql']
    // mariadbd refuses to run as root unless told to.
    return process.getuid?.() === 0 ? ['--user=root'] : []
  }

  /**
   * Starts the server process (again) on the same port and datadir; resolves once it accepts
   * connections. `onceArguments` apply to this start only (Galera's --wsrep-new-cluster).
   */
  async start (onceArguments: readonly string[] = []): Promise<void> {
    if (this.#process !== undefined) throw new Error(`the server on port ${this.port} is already running`)
    const child = spawn(this.#binaries.server, [
      '--no-defaults', `--datadir=${this.datadir}`, `--port=${this.port}`, '--bind-address=127.0.0.1',
      `--socket=${join(this.root, 'mysqld.sock')}`, `--pid-file=${join(this.root, 'mysqld.pid')}`,
      // Its own tmpdir: at start-up mariadbd deletes stray #sql* files in its tmpdir, which in
      // the default /tmp are the machine's server's live temporary tables.
      `--tmpdir=${join(this.root, 'tmp')}`,
      '--skip-name-resolve', '--innodb-buffer-pool-size=32M', '--max-connections=500', ...this.#userArguments(),
      ...this.#serverArguments, ...onceArguments
    ], { stdio: ['ignore', 'ignore', 'pipe'], env: this.#environment() })
    this.#process = child
    this.#log = ''
    alive.add(child)
    track()
    child.once('exit', () => {
      alive.delete(child)
      track()
      if (this.#process === child) this.#process = undefined
    })
    // Keep draining stderr for the life of the process so a chatty server never blocks on a full pipe.
    child.stderr?.on('data', (chunk: Buffer) => {
      this.#log = (this.#log + chunk.toString()).slice(-LOG_TAIL_CHARACTERS)
    })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`the server on port ${this.port} did not become ready in ${this.#readyTimeoutMillis} ms:\n${this.#log}`)), this.#readyTimeoutMillis)
      const onData = () => { if (/ready for connections/.test(this.#log)) done() }
      const onEarlyExit = (code: number | null) => fail(new Error(`the server on port ${this.port} exited (${String(code)}) before it was ready:\n${this.#log}`))
      const cleanup = () => {
        clearTimeout(timer)
        child.stderr?.off('data', onData)
        child.off('exit', onEarlyExit)
      }
      const done = () => { cleanup(); resolve() }
      const fail = (error: Error) => { cleanup(); child.kill('SIGKILL'); reject(error) }
      child.stderr?.on('data', onData)
      child.once('exit', onEarlyExit)
    })
  }

  /** Sends `signal` and, unless it is SIGSTOP/SIGCONT, waits for the process to exit. */
  async signal (signal: NodeJS.Signals): Promise<void> {
    const child = this.#process
    if (child === undefined) return
    if (signal === 'SIGSTOP' || signal === 'SIGCONT') {
      child.kill(signal)
      return
    }
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    // A frozen server would never act on SIGTERM.
    if (signal !== 'SIGKILL') child.kill('SIGCONT')
    child.kill(signal)
    await exited
  }

  /** SIGKILL: a crash, with no goodbye to clients or peers. */
  async kill (): Promise<void> {
    await this.signal('SIGKILL')
  }

  /** A clean shutdown (SIGTERM); resolves once the process has exited. */
  async stop (): Promise<void> {
    await this.signal('SIGTERM')
  }

  /** SIGSTOP: the server keeps its sockets open and answers nothing. */
  async freeze (): Promise<void> {
    await this.signal('SIGSTOP')
  }

  /** SIGCONT after freeze(). */
  async thaw (): Promise<void> {
    await this.signal('SIGCONT')
  }

  /** Runs `sql` on a connection of its own as root, closed after use; the rows of a SELECT, else []. */
  async query (sql: string, values?: unknown[]): Promise<Row[]> {
    const { createConnection } = await import('mysql2/promise')
    const connection = await createConnection({ host: '127.0.0.1', port: this.port, user: 'root', connectTimeout: 5000 })
    try {
      const [rows] = await connection.query(sql, values)
      return Array.isArray(rows) ? rows as Row[] : []
    } finally {
      await connection.end()
    }
  }

  /** `SET GLOBAL read_only=1`: writes of users without READ_ONLY ADMIN fail with 1290. */
  async demote (): Promise<void> {
    await this.query('SET GLOBAL read_only = 1')
  }

  /** `SET GLOBAL read_only=0`. */
  async promote (): Promise<void> {
    await this.query('SET GLOBAL read_only = 0')
  }

  /** Deletes the temp directory (the server must not run). */
  async remove (): Promise<void> {
    await rm(this.root, { recursive: true, force: true })
    roots.delete(this.root)
    track()
  }

  /** SIGKILLs the server (thawing it first if frozen) and deletes its temp directory. */
  async destroy (): Promise<void> {
    await this.kill()
    await this.remove()
  }
}
