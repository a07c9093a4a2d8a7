import createError from '@fastify/error'
import { createConnection } from 'mysql2/promise'
import { EXAMPLE_DATABASE } from './config'

const DatabaseUnreachable = createError('EXAMPLE_DATABASE_UNREACHABLE',
  'no MySQL or MariaDB server answered at %s (%s): start one there, or set MYSQL_URL=mysql://user:password@host:3306/database', 500)

export const SEEDED_USERS = 1000

/**
 * Creates and seeds the `users` table (and the example's own database, when MYSQL_URL named
 * none) on a connection closed before the primary forks: it never holds a pool its workers
 * could inherit. Under pm2, run it before `pm2 start`, as a deployment runs its migrations.
 */
export async function prepareSchema (mysqlUrl: string): Promise<void> {
  const url = new URL(mysqlUrl)
  const database = decodeURIComponent(url.pathname.slice(1))
  url.pathname = '/'
  const connection = await createConnection({ uri: url.toString() }).catch((error: { code?: string }) => {
    // user@host:port only: never the password.
    throw new DatabaseUnreachable(`${decodeURIComponent(url.username)}@${url.host}`, error.code ?? String(error), { cause: error })
  })
  try {
    if (database === EXAMPLE_DATABASE) await connection.query(`CREATE DATABASE IF NOT EXISTS \`${EXAMPLE_DATABASE}\``)
    await connection.changeUser({ database })
    await connection.query(`CREATE TABLE IF NOT EXISTS users (
      id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      name VARCHAR(100) NOT NULL,
      email VARCHAR(200) NOT NULL,
      UNIQUE KEY users_email (email)
    )`)
    const rows = Array.from({ length: SEEDED_USERS }, (_, index) => [index + 1, `User ${index + 1}`, `user${index + 1}@example.com`])
    await connection.query('INSERT IGNORE INTO users (id, name, email) VALUES ?', [rows])
  } finally {
    await connection.end()
  }
}
