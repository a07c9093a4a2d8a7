import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

// A throw-away MariaDB/MySQL server in a temp datadir on a free port, for tests and the example
// app on machines without a shared server, and for tests that must restart, crash, freeze or
// reconfigure a server without touching the machine's own.

const SEARCH_PATH = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/usr/local/mysql/bin']
const READY_TIMEOUT_MILLIS = 30_000

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
export function findServerBinaries (): { server: string, installDb: string } | undefined {
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

export class PrivateServer {
  readonly port: number
  readonly datadir: string
  readonly #binaries: { server: string, installDb: string }
  #process: ChildProcess | undefined

  private constructor (port: number, datadir: string, binaries: { server: string, installDb: string }) {
    this.port = port
    this.datadir = datadir
    this.#binaries = binaries
  }

  /** Root URL (no password) of the `test` database on this server. */
  get url (): string {
    return `mysql://root@127.0.0.1:${this.port}/test`
  }

  /** The server's process id while it runs. */
  get pid (): number | undefined {
    return this.#process?.pid
  }

  /** Initialises a datadir, starts the server and creates the `test` database. */
  static async start (): Promise<PrivateServer> {
    const binaries = findServerBinaries()
    if (binaries === undefined) {
      throw new Error('No mariadbd or mysqld is installed: set MYSQL_URL to a server, or run `apt-get install mariadb-server`.')
    }
    const root = await mkdtemp(join(tmpdir(), 'fork-safe-db-'))
    await mkdir(join(root, 'tmp'))
    const server = new PrivateServer(await freePort(), root, binaries)
    const init = spawnSync(binaries.installDb, [
      '--no-defaults', `--datadir=${join(root, 'data')}`, '--auth-root-authentication-method=normal',
      '--skip-test-db', ...server.#userArguments()
    ], { encoding: 'utf8', env: server.#environment() })
    if (init.status !== 0) {
      await rm(root, { recursive: true, force: true })
      throw new Error(`${binaries.installDb} failed (${String(init.status)}): ${init.stderr}`)
    }
    await server.restart()
    const { createConnection } = await import('mysql2/promise')
    const admin = await createConnection({ host: '127.0.0.1', port: server.port, user: 'root' })
    await admin.query('CREATE DATABASE IF NOT EXISTS test')
    await admin.end()
    return server
  }

  // mariadbd takes its default tmpdir from TMPDIR: the bootstrap run by install-db needs it too.
  #environment (): NodeJS.ProcessEnv {
    return { ...process.env, TMPDIR: join(this.datadir, 'tmp') }
  }

  #userArguments (): string[] {
    // mariadbd refuses to run as root unless told to.
    return process.getuid?.() === 0 ? ['--user=root'] : []
  }

  /** Starts the server process (again) on the same port and datadir; resolves once it accepts connections. */
  async restart (): Promise<void> {
    if (this.#process !== undefined) throw new Error('private server is already running')
    const child = spawn(this.#binaries.server, [
      '--no-defaults', `--datadir=${join(this.datadir, 'data')}`, `--port=${this.port}`, '--bind-address=127.0.0.1',
      `--socket=${join(this.datadir, 'mysqld.sock')}`, `--pid-file=${join(this.datadir, 'mysqld.pid')}`,
      // Its own tmpdir: at start-up mariadbd deletes stray #sql* files in its tmpdir, which in
      // the default /tmp are the machine's server's live temporary tables.
      `--tmpdir=${join(this.datadir, 'tmp')}`,
      '--skip-name-resolve', '--innodb-buffer-pool-size=32M', '--max-connections=500', ...this.#userArguments()
    ], { stdio: ['ignore', 'ignore', 'pipe'], env: this.#environment() })
    this.#process = child
    await new Promise<void>((resolve, reject) => {
      let log = ''
      const timer = setTimeout(() => fail(new Error(`private server did not become ready in ${READY_TIMEOUT_MILLIS} ms:\n${log}`)), READY_TIMEOUT_MILLIS)
      const onData = (chunk: Buffer) => {
        log += chunk.toString()
        if (/ready for connections/.test(log)) done()
      }
      const onExit = (code: number | null) => fail(new Error(`private server exited (${String(code)}) before it was ready:\n${log}`))
      const cleanup = () => {
        clearTimeout(timer)
        child.stderr?.off('data', onData)
        child.off('exit', onExit)
        // Keep draining stderr so a chatty server never blocks on a full pipe.
        child.stderr?.resume()
      }
      const done = () => { cleanup(); resolve() }
      const fail = (error: Error) => { cleanup(); this.#process = undefined; child.kill('SIGKILL'); reject(error) }
      child.stderr?.on('data', onData)
      child.once('exit', onExit)
    })
    child.once('exit', () => { if (this.#process === child) this.#process = undefined })
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
    child.kill(signal)
    await exited
    this.#process = undefined
  }

  /** Graceful shutdown. */
  async stop (): Promise<void> {
    await this.signal('SIGTERM')
  }

  /** Stops the server and deletes its datadir. */
  async destroy (): Promise<void> {
    if (this.#process !== undefined) {
      this.#process.kill('SIGCONT')
      await this.stop()
    }
    await rm(this.datadir, { recursive: true, force: true })
  }
}
