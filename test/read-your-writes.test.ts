import forkSafeDb from '../lib'
import { ReplicationPair } from '../support/replication-pair'
import { request } from './helpers/http-client'
import { settledConnections, watchedApp, type WatchedApp } from './helpers/replica-app'

// docs/replicas.md's read-your-writes recipe, as written there, against a real primary and GTID
// replica: after a write, the primary's GTID position travels with the client, and a read on
// the replica first waits (MASTER_GTID_WAIT, bounded) until the replica has applied it; if it
// has not within the bound, the read goes to the primary.

const WAIT_SECONDS = 5
const REPLICA_ID = 2
const PRIMARY_ID = 1

let pair: ReplicationPair
let watched: WatchedApp | undefined

beforeAll(async () => {
  pair = await ReplicationPair.start()
  await pair.primary.query('CREATE TABLE test.orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(40) NOT NULL)')
  await pair.waitForReplica()
}, 120_000)
afterAll(async () => { await pair?.close() })
afterEach(async () => {
  await watched?.app.close()
  watched = undefined
  expect(await settledConnections(pair.primary, 0)).toBe(0)
  expect(await settledConnections(pair.replica, 0)).toBe(0)
  await pair.startReplica()
  await pair.waitForReplica()
})

async function shop (waitSeconds: number): Promise<WatchedApp> {
  watched = watchedApp()
  const { app } = watched
  await app.register(forkSafeDb, { connection: pair.primary.url, pool: { min: 1, max: 2 } })
  await app.register(forkSafeDb, { connection: pair.replica.url, decorator: 'replica', pool: { min: 1, max: 2 } })

  // The recipe (docs/replicas.md, "Read your writes").
  app.post('/orders', async (request) => {
    const [id] = await request.db('orders').insert({ item: (request.body as { item: string }).item })
    // The primary's GTID position once the insert committed: it covers the insert.
    const [[{ position }]] = await request.db.raw('SELECT @@GLOBAL.gtid_binlog_pos AS position')
    return { id, position }
  })
  app.get('/orders/:id', async (request) => {
    const { id } = request.params as { id: string }
    const { after } = request.query as { after?: string }
    if (after !== undefined) {
      // 0 once the replica has applied `after`; -1 when the bound passed first.
      const [[{ waited }]] = await request.replica.raw('SELECT MASTER_GTID_WAIT(?, ?) AS waited', [after, waitSeconds])
      if (waited !== 0) return { from: PRIMARY_ID, order: await request.db('orders').where({ id }).first() }
    }
    const [[{ serverId }]] = await request.replica.raw('SELECT @@server_id AS serverId')
    return { from: serverId, order: await request.replica('orders').where({ id }).first() }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return watched
}

interface Written { id: number, position: string }

test('a read after a write returns the just-written row from the replica, once the replica has applied it', async () => {
  const { app } = await shop(WAIT_SECONDS)
  await pair.stopReplicaSql()
  const posted = await request(app, '/orders', { method: 'POST', body: { item: 'a book' } })
  expect(posted.status).toBe(200)
  const { id, position } = JSON.parse(posted.body) as Written
  // The replica has not applied the write: a plain read there would miss it.
  expect(await pair.replica.query('SELECT id FROM test.orders WHERE id = ?', [id])).toEqual([])

  const read = request(app, `/orders/${id}?after=${encodeURIComponent(position)}`)
  await pair.startReplica()
  const answer = await read
  expect(answer.status).toBe(200)
  expect(JSON.parse(answer.body)).toEqual({ from: REPLICA_ID, order: { id, item: 'a book' } })
})

test('a read whose replica has not applied the write within the bound goes to the primary', async () => {
  const { app } = await shop(1)
  await pair.stopReplicaSql()
  const posted = await request(app, '/orders', { method: 'POST', body: { item: 'a lamp' } })
  const { id, position } = JSON.parse(posted.body) as Written
  const answer = await request(app, `/orders/${id}?after=${encodeURIComponent(position)}`)
  expect(answer.status).toBe(200)
  expect(JSON.parse(answer.body)).toEqual({ from: PRIMARY_ID, order: { id, item: 'a lamp' } })
})
