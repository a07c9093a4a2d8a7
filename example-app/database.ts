import type { Logger } from 'pino'
import type { PrivateServer } from '../support/private-server'
import { resolveServer } from '../support/server-url'

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
 * (The same rules as the test suite, and the same helper.)
 */
export async function startDatabase (log: Logger): Promise<ExampleDatabase> {
  const { url, privateServer } = await resolveServer()
  if (privateServer === undefined) return { url, release: async () => {} }
  log.warn({ database: describeDatabase(url), datadir: privateServer.datadir },
    'no MYSQL_URL and nothing on 127.0.0.1:3306: started a private throw-away MariaDB for this run')
  return { url, release: () => (privateServer as PrivateServer).destroy() }
}
