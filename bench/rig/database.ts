import { createConnection } from 'mysql2/promise'
import { resolveServer, type ResolvedServer } from '../../support/server-url'

// The benchmarks' database: the server the tests use (MYSQL_URL, 127.0.0.1:3306, or a private
// throw-away one), with a database and a seeded `users` table of its own, never the shared
// `test` one. The table is the example app's, so a figure here and the example agree on what
// one lookup is.

const DATABASE = 'fork_safe_db_bench'
export const SEEDED_USERS = 1000

export interface BenchDatabase {
  /** The bench's own database on that server. */
  url: string
  server: ResolvedServer
  /** Deletes the private server, if one was started for this run. */
  release: () => Promise<void>
}

/** `serverUrl` with the bench's own database, created if missing. */
async function ownDatabase (serverUrl: string, database: string): Promise<string> {
  const connection = await createConnection({ uri: serverUrl })
  try {
    await connection.query(`CREATE DATABASE IF NOT EXISTS \`${database}\``)
  } finally {
    await connection.end()
  }
  const url = new URL(serverUrl)
  url.pathname = `/${database}`
  return url.toString()
}

/** Creates and seeds `users` on a short-lived connection, closed before any app forks. */
async function prepareSchema (url: string): Promise<void> {
  const connection = await createConnection({ uri: url })
  try {
    await connection.query(`CREATE TABLE IF NOT EXISTS users (
      id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      name VARCHAR(100) NOT NULL,
      email VARCHAR(200) NOT NULL,
      UNIQUE KEY users_email (email)
    )`)
    const rows = Array.from({ length: SEEDED_USERS }, (_, index) =>
      [index + 1, `User ${index + 1}`, `user${index + 1}@example.com`])
    await connection.query('INSERT IGNORE INTO users (id, name, email) VALUES ?', [rows])
  } finally {
    await connection.end()
  }
}

/**
 * The bench's database on the tests' server. A benchmark that counts its app's connections in
 * PROCESSLIST by database passes a name of its own, which no other process on the server uses.
 */
export async function benchDatabase (database = DATABASE): Promise<BenchDatabase> {
  const server = await resolveServer()
  const release = async () => { await server.privateServer?.destroy() }
  try {
    const url = await ownDatabase(server.url, database)
    await prepareSchema(url)
    return { url, server, release }
  } catch (error) {
    await release()
    throw error
  }
}

/** A path to one of the seeded users, cycling through them. */
export const userPath = (index: number): string => `/users/${(index % SEEDED_USERS) + 1}`
