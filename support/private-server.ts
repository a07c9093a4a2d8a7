import { Mariadbd } from './mariadbd'

// A throw-away MariaDB/MySQL server in a temp datadir on a free port, for tests and the example
// app on machines without a shared server, and for tests that must restart, crash, freeze or
// reconfigure a server without touching the machine's own. (The process itself: mariadbd.ts,
// which the replication pair and the Galera cluster share.)

export { findServerBinaries, freePort } from './mariadbd'

export class PrivateServer {
  readonly #node: Mariadbd

  private constructor (node: Mariadbd) {
    this.#node = node
  }

  get port (): number {
    return this.#node.port
  }

  /** The temp directory that holds the datadir, the socket and the server's tmpdir. */
  get datadir (): string {
    return this.#node.root
  }

  /** Root URL (no password) of the `test` database on this server. */
  get url (): string {
    return this.#node.url
  }

  /** The server's process id while it runs. */
  get pid (): number | undefined {
    return this.#node.pid
  }

  /** Initialises a datadir, starts the server and creates the `test` database. */
  static async start (): Promise<PrivateServer> {
    const node = await Mariadbd.create()
    try {
      await node.start()
      await node.query('CREATE DATABASE IF NOT EXISTS test')
    } catch (error) {
      await node.destroy()
      throw error
    }
    return new PrivateServer(node)
  }

  /** Starts the server process (again) on the same port and datadir; resolves once it accepts connections. */
  async restart (): Promise<void> {
    await this.#node.start()
  }

  /** Sends `signal` and, unless it is SIGSTOP/SIGCONT, waits for the process to exit. */
  async signal (signal: NodeJS.Signals): Promise<void> {
    await this.#node.signal(signal)
  }

  /** Graceful shutdown. */
  async stop (): Promise<void> {
    await this.#node.stop()
  }

  /** Stops the server and deletes its datadir. */
  async destroy (): Promise<void> {
    await this.#node.stop()
    await this.#node.remove()
  }
}
