import { createConnection, type Connection } from 'mysql2'
import type { DriverConnection } from '../lib/driver/types'
import { checkRole } from '../lib/hosts/role-check'
import { PrivateServer } from '../support/private-server'

// What a server says of its role on a new connection (lib/hosts/role-check.ts), asked of a
// private server whose read_only the tests turn on and off.

let server: PrivateServer
let connection: Connection

beforeAll(async () => { server = await PrivateServer.start() })
afterAll(async () => { await server.destroy() })

beforeEach(async () => {
  connection = createConnection({ host: '127.0.0.1', port: server.port, user: 'root' })
  await connection.promise().query('SET GLOBAL read_only = 0')
})

afterEach(async () => {
  await connection.promise().query('SET GLOBAL read_only = 0')
  await connection.promise().end()
})

/** The connection as the pool holds it. */
function pooled (): DriverConnection {
  return connection as unknown as DriverConnection
}

/** Statements this session has sent (the server's own count, which includes the SHOW itself). */
async function questions (): Promise<number> {
  const [rows] = await connection.promise().query("SHOW SESSION STATUS LIKE 'Questions'")
  return Number((rows as Array<{ Value: string }>)[0]?.Value)
}

test('a writable server is ok for a primary registration', async () => {
  expect(await checkRole(pooled(), 'primary')).toBe('ok')
})

test('a server with read_only on is read-only for a primary registration', async () => {
  await connection.promise().query('SET GLOBAL read_only = 1')
  expect(await checkRole(pooled(), 'primary')).toBe('read-only')
})

test('a server with read_only on is ok for an any-role registration', async () => {
  await connection.promise().query('SET GLOBAL read_only = 1')
  expect(await checkRole(pooled(), 'any')).toBe('ok')
})

test('a server without Galera is not taken for a node that is not ready', async () => {
  // MariaDB has wsrep_ready OFF in its status even without Galera: wsrep_on tells them apart.
  const [rows] = await connection.promise().query("SHOW GLOBAL STATUS LIKE 'wsrep_ready'")
  expect(rows).toEqual([expect.objectContaining({ Value: 'OFF' })])
  expect(await checkRole(pooled(), 'any')).toBe('ok')
})

test('the check takes one round trip', async () => {
  const before = await questions()
  await checkRole(pooled(), 'primary')
  const after = await questions()
  console.log(`role check: ${after - before - 1} statement(s) on a new connection`)
  expect(after - before - 1).toBe(1)
})

test('a connection that cannot answer fails the check with the driver\'s error', async () => {
  const [rows] = await connection.promise().query('SELECT CONNECTION_ID() AS id')
  const { id } = (rows as Array<{ id: number }>)[0] as { id: number }
  // As on the pool's connections (client/connect.ts): the close may arrive before the check's
  // query is sent, and mysql2 then emits it as an 'error' event.
  connection.on('error', () => {})
  const killer = createConnection({ host: '127.0.0.1', port: server.port, user: 'root' })
  await killer.promise().query(`KILL ${id}`)
  await killer.promise().end()
  await expect(checkRole(pooled(), 'primary')).rejects.toMatchObject({ fatal: true })
  // The killed session: reconnect for afterEach.
  connection.destroy()
  connection = createConnection({ host: '127.0.0.1', port: server.port, user: 'root' })
})
