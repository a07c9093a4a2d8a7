import { createConnection } from 'mysql2/promise'
import type { Logger } from 'pino'
import type { PrivateServer } from '../support/private-server'
import { resolveServer } from '../support/server-url'

/** The example's own database on a server it was not told a database of (created if missing). */
export const EXAMPLE_DATABASE = 'fork_safe_db_example'

export interface ExampleDatabase {
  url: string
  /** Deletes the private server, if one was started for this run. */
  release: () => Promise<void>
}

/** `user@host:port/database`, for logs: never the password. */
export function describeDatabase (url: string): string {
  const parsed = new URL(url)
  return `${decodeURIComponent(parsed.username)}@${parsed.host}${parsed.pathname}`
}

/**
 * MYSQL_URL if set; else the server on 127.0.0.1:3306; else, on a machine with mariadbd or
 * mysqld installed, a private throw-away server that is deleted when the example exits.
 * (The same rules as the test suite, and the same helper.) The database is MYSQL_URL's when it
 * names one; otherwise the example's own, `fork_safe_db_example`, created if missing, so the
 * example never writes into a database it was not given (the shared `test` one, say).
 */
export async function startDatabase (log: Logger): Promise<ExampleDatabase> {
  const { url, privateServer } = await resolveServer()
  const release = privateServer === undefined ? async () => {} : () => (privateServer as PrivateServer).destroy()
  if (privateServer !== undefined) {
    log.warn({ datadir: privateServer.datadir }, 'no MYSQL_URL and nothing on 127.0.0.1:3306: started a private throw-away MariaDB for this run')
  }
  const given = process.env.MYSQL_URL !== undefined && process.env.MYSQL_URL !== '' && new URL(url).pathname.length > 1
  if (given) return { url, release }
  try {
    return { url: await ownDatabase(url), release }
  } catch (error) {
    await release()
    throw error
  }
}

/** `serverUrl` with the example's own database, created if missing. */
export async function ownDatabase (serverUrl: string): Promise<string> {
  const connection = await createConnection({ uri: serverUrl })
  try {
    await connection.query(`CREATE DATABASE IF NOT EXISTS \`${EXAMPLE_DATABASE}\``)
  } finally {
    await connection.end()
  }
  const url = new URL(serverUrl)
  url.pathname = `/${EXAMPLE_DATABASE}`
  return url.toString()
}
