import { randomBytes } from 'node:crypto'
import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise'

// Each test gets its own database user, so `information_schema.PROCESSLIST` filtered by that
// user counts exactly the connections of the pool under test, even with test files in parallel.

const SETTLE_TIMEOUT_MILLIS = 3000
const SETTLE_POLL_MILLIS = 20
const STATEMENT_START_MILLIS = 3000

export function adminUrl (): string {
  const url = process.env.FORK_SAFE_DB_TEST_ADMIN_URL ?? process.env.MYSQL_URL
  if (url === undefined) throw new Error('FORK_SAFE_DB_TEST_ADMIN_URL is not set: run the tests through jest (see jest.config.js)')
  return url
}

export interface TestUser {
  user: string
  password: string
  /** `mysql://user:password@host:port/database` */
  url: string
  connection: { host: string, port: number, user: string, password: string, database: string }
}

export interface ServerProcess {
  id: number
  command: string
  info: string | null
}

export class TestDatabase {
  readonly admin: Connection
  readonly #host: string
  readonly #port: number
  readonly database: string
  readonly #users: string[] = []
  readonly #databases: string[] = []

  private constructor (admin: Connection, url: URL) {
    this.admin = admin
    this.#host = url.hostname
    this.#port = url.port === '' ? 3306 : Number(url.port)
    this.database = decodeURIComponent(url.pathname.replace(/^\//, '')) || 'test'
  }

  static async open (): Promise<TestDatabase> {
    const url = adminUrl()
    const admin = await createConnection({ uri: url })
    return new TestDatabase(admin, new URL(url))
  }

  /**
   * Creates a user with a random, distinctive password and full rights on the test database,
   * or on a database of its own (dropped on close) when `ownDatabase` is set.
   */
  async createUser ({ ownDatabase = false } = {}): Promise<TestUser> {
    const suffix = randomBytes(5).toString('hex')
    const user = `ffsdb_${suffix}`
    const password = `pw-${randomBytes(9).toString('hex')}`
    const database = ownDatabase ? user : this.database
    if (ownDatabase) {
      await this.admin.query(`CREATE DATABASE \`${database}\``)
      this.#databases.push(database)
    }
    await this.admin.query('CREATE USER ?@\'%\' IDENTIFIED BY ?', [user, password])
    await this.admin.query(`GRANT ALL PRIVILEGES ON \`${database}\`.* TO ?@'%'`, [user])
    // PROCESS lets the pool's own connections see each other in the process list (KILL tests).
    await this.admin.query('GRANT PROCESS ON *.* TO ?@\'%\'', [user])
    this.#users.push(user)
    const connection = { host: this.#host, port: this.#port, user, password, database }
    const url = `mysql://${user}:${encodeURIComponent(password)}@${this.#host}:${this.#port}/${database}`
    return { user, password, url, connection }
  }

  /** The server's connections of `user`, oldest first. */
  async processes (user: string): Promise<ServerProcess[]> {
    const [rows] = await this.admin.query<RowDataPacket[]>(
      'SELECT ID AS id, COMMAND AS command, INFO AS info FROM information_schema.PROCESSLIST WHERE USER = ? ORDER BY ID',
      [user]
    )
    return rows.map((row) => ({ id: Number(row.id), command: String(row.command), info: row.info as string | null }))
  }

  async connectionIds (user: string): Promise<number[]> {
    return (await this.processes(user)).map((process) => process.id)
  }

  async countConnections (user: string): Promise<number> {
    return (await this.processes(user)).length
  }

  /**
   * The connection count once it reaches `expected`, or the last count seen after a timeout.
   * The server drops a thread from the process list shortly after the client's socket closes;
   * polling the server is the only way to observe that.
   */
  async settledCount (user: string, expected: number): Promise<number> {
    const deadline = performance.now() + SETTLE_TIMEOUT_MILLIS
    let count = await this.countConnections(user)
    while (count !== expected && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, SETTLE_POLL_MILLIS))
      count = await this.countConnections(user)
    }
    return count
  }

  /** Resolves once a statement of `user` containing `marker` runs; rejects if none has after `withinMillis`. */
  async statementStarted (user: string, marker: string, withinMillis = STATEMENT_START_MILLIS): Promise<void> {
    const deadline = performance.now() + withinMillis
    while (!(await this.#running(user, marker))) {
      if (performance.now() > deadline) throw new Error(`no statement containing ${marker} began within ${withinMillis} ms`)
      await new Promise((resolve) => setTimeout(resolve, SETTLE_POLL_MILLIS))
    }
  }

  /** Whether a statement of `user` containing `marker` still runs once `withinMillis` has passed (polled until then). */
  async stillRunningAfter (user: string, marker: string, withinMillis: number): Promise<boolean> {
    const deadline = performance.now() + withinMillis
    for (;;) {
      const running = await this.#running(user, marker)
      if (!running || performance.now() > deadline) return running
      await new Promise((resolve) => setTimeout(resolve, SETTLE_POLL_MILLIS))
    }
  }

  async #running (user: string, marker: string): Promise<boolean> {
    return (await this.processes(user)).some((process) => process.info?.includes(marker) === true)
  }

  async kill (id: number): Promise<void> {
    await this.admin.query(`KILL CONNECTION ${Number(id)}`)
  }

  /** Drops the users this instance created (killing leftovers) and closes the admin connection. */
  async close (): Promise<void> {
    for (const user of this.#users) {
      for (const id of await this.connectionIds(user)) await this.kill(id).catch(() => {})
      await this.admin.query('DROP USER IF EXISTS ?@\'%\'', [user])
    }
    for (const database of this.#databases) await this.admin.query(`DROP DATABASE IF EXISTS \`${database}\``)
    await this.admin.end()
  }
}

export interface PerTestUser {
  /** The admin connection, open for the whole file. */
  readonly database: TestDatabase
  /** A fresh user for the current test. */
  readonly user: TestUser
}

/**
 * Registers the hooks every database test file needs: an admin connection for the file and a
 * fresh user (optionally with its own database) for each test, all dropped at the end.
 */
export function perTestUser (options: { ownDatabase?: boolean } = {}): PerTestUser {
  let database: TestDatabase | undefined
  let user: TestUser | undefined
  beforeAll(async () => { database = await TestDatabase.open() })
  afterAll(async () => { await database?.close() })
  beforeEach(async () => { user = await database?.createUser(options) })
  const ready = <T>(value: T | undefined, name: string): T => {
    if (value === undefined) throw new Error(`${name} is only available inside a test`)
    return value
  }
  return {
    get database () { return ready(database, 'database') },
    get user () { return ready(user, 'user') }
  }
}
