import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import Fastify, { type FastifyInstance } from 'fastify'
import { createConnection } from 'mysql2'
import forkSafeDb, { channels, type PoolDestroyEvent } from '../lib'
import type { DriverConnection } from '../lib/driver/types'
import { checkRole } from '../lib/hosts/role-check'
import { GaleraCluster, requireGalera } from '../support/galera-cluster'

// A Galera node that left the primary component (its two peers frozen with SIGSTOP) answers
// 1047 "WSREP has not yet prepared node for application use": the statement fails with
// FST_FORK_SAFE_DB_NODE_NOT_READY and every connection to that node is retired. The role check
// says the same of a new connection to it, and `ok` of a Synced node.

// A Galera boot is a state transfer per joiner: tens of seconds on a busy two-core machine.
jest.setTimeout(180_000)

const NOT_READY_WITHIN_MILLIS = 60_000

let cluster: GaleraCluster
let app: FastifyInstance | undefined
const destroyed: PoolDestroyEvent[] = []
const onDestroy = (message: unknown) => { destroyed.push(message as PoolDestroyEvent) }

beforeAll(async () => {
  requireGalera()
  cluster = await GaleraCluster.start({ nodes: 3 })
  await cluster.node(1).query('CREATE TABLE test.items (id INT AUTO_INCREMENT PRIMARY KEY)')
  subscribe(channels.poolDestroy, onDestroy)
})

afterAll(async () => {
  unsubscribe(channels.poolDestroy, onDestroy)
  await app?.close()
  await cluster?.close()
})

/** The role a new connection to `port` reports, on a connection of its own. */
async function roleOn (port: number, role: 'primary' | 'any'): Promise<string> {
  const connection = createConnection({ host: '127.0.0.1', port, user: 'root' })
  try {
    return await checkRole(connection as unknown as DriverConnection, role)
  } finally {
    await connection.promise().end()
  }
}

/** Polls (bounded) until the node says it is not ready: Galera's eviction has no event to await. */
async function notReady (index: number): Promise<void> {
  const deadline = Date.now() + NOT_READY_WITHIN_MILLIS
  for (;;) {
    const [row] = await cluster.node(index).query("SHOW GLOBAL STATUS LIKE 'wsrep_ready'")
    if (row?.Value === 'OFF') return
    if (Date.now() > deadline) throw new Error(`node ${index} still ready after ${NOT_READY_WITHIN_MILLIS} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

test('a Synced Galera node is ok for a primary registration', async () => {
  expect(await roleOn(cluster.node(1).port, 'primary')).toBe('ok')
})

test('a node outside the primary component fails a statement with FST_FORK_SAFE_DB_NODE_NOT_READY, and its connections are retired', async () => {
  const node = cluster.node(1)
  const built = Fastify()
  app = built
  await built.register(forkSafeDb, { connection: node.url, pool: { min: 2, max: 2 }, warmup: true })
  await built.ready()
  const warm = (await node.query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app'")).map((row) => Number(row.ID))
  expect(warm).toHaveLength(2)

  await Promise.all([cluster.node(2).freeze(), cluster.node(3).freeze()])
  try {
    await notReady(1)
    expect(await roleOn(node.port, 'any')).toBe('not-ready')

    const error = await built.db('items').select().then(() => undefined, (failure: unknown) => failure)
    expect(error).toMatchObject({
      code: 'FST_FORK_SAFE_DB_NODE_NOT_READY',
      statusCode: 503,
      errno: 1047,
      sqlMessage: expect.stringContaining('WSREP'),
      message: expect.stringContaining(`127.0.0.1:${node.port}`)
    })
    // Not ready: every connection to the node goes, the one that answered and the idle one.
    await built.close()
    app = undefined
    expect(destroyed.filter((event) => warm.includes(event.connectionId as number)).map((event) => event.reason).sort()).toEqual(['retired', 'retired'])
  } finally {
    await Promise.all([cluster.node(2).thaw(), cluster.node(3).thaw()])
  }
})
