import { createConnection } from 'mysql2/promise'
import { findServerBinaries, PrivateServer } from './private-server'

// Where the tests (and the example app) find a database server, in order:
// 1. MYSQL_URL, if set;
// 2. the machine's server on 127.0.0.1:3306 as root with no password (database `test`);
// 3. a private throw-away server, if mariadbd or mysqld is installed.

export const LOCAL_URL = 'mysql://root@127.0.0.1:3306/test'
const PROBE_TIMEOUT_MILLIS = 2000

export interface ResolvedServer {
  url: string
  /** Set when a private server was started; the caller must destroy it. */
  privateServer?: PrivateServer
}

/** True when a server answers at `url` and accepts its credentials. */
export async function canConnect (url: string): Promise<boolean> {
  try {
    const connection = await createConnection({ uri: url, connectTimeout: PROBE_TIMEOUT_MILLIS })
    await connection.end()
    return true
  } catch {
    return false
  }
}

export async function resolveServer (): Promise<ResolvedServer> {
  const fromEnvironment = process.env.MYSQL_URL
  if (fromEnvironment !== undefined && fromEnvironment !== '') return { url: fromEnvironment }
  if (await canConnect(LOCAL_URL)) return { url: LOCAL_URL }
  if (findServerBinaries() !== undefined) {
    const privateServer = await PrivateServer.start()
    return { url: privateServer.url, privateServer }
  }
  throw new Error(
    'No MySQL/MariaDB server: nothing answers on 127.0.0.1:3306 and no mariadbd/mysqld is installed. ' +
    'Set MYSQL_URL=mysql://user:password@host:3306/database, or run `apt-get install mariadb-server`.'
  )
}
