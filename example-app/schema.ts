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
      email VARCHAR(200) NOT NULL,
      UNIQUE KEY users_email (email)
    )`)
    // A table made by an earlier version of the example has no unique key yet.
    const [keys] = await connection.query('SHOW INDEX FROM users WHERE Key_name = ?', ['users_email'])
    if ((keys as unknown[]).length === 0) await connection.query('ALTER TABLE users ADD UNIQUE KEY users_email (email)')
    const rows = Array.from({ length: SEEDED_USERS }, (_, index) => [index + 1, `User ${index + 1}`, `user${index + 1}@example.com`])
    await connection.query('INSERT IGNORE INTO users (id, name, email) VALUES ?', [rows])
  } finally {
    await connection.end()
  }
}
