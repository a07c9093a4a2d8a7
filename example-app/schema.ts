import { createConnection } from 'mysql2/promise'

export const SEEDED_USERS = 1000

/**
 * Creates and seeds the `users` table with a short-lived connection that is closed before the
 * primary forks: the primary never holds a pool its workers could inherit.
 */
export async function prepareSchema (url: string): Promise<void> {
  const connection = await createConnection({ uri: url })
  try {
    await connection.query(`CREATE TABLE IF NOT EXISTS users (
      id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
      name VARCHAR(100) NOT NULL,
      email VARCHAR(200) NOT NULL
    )`)
    const rows = Array.from({ length: SEEDED_USERS }, (_, index) => [index + 1, `User ${index + 1}`, `user${index + 1}@example.com`])
    await connection.query('INSERT IGNORE INTO users (id, name, email) VALUES ?', [rows])
  } finally {
    await connection.end()
  }
}
