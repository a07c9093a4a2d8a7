import type { FastifyInstance } from 'fastify'
import { createConnection } from 'mysql2/promise'
import forkSafeDb from '../lib'
import { GaleraCluster } from '../support/galera-cluster'
import { buildApp } from './helpers/app'
import { barrier } from './helpers/barrier'

// A Galera cluster certifies each transaction at COMMIT: of two transactions on two nodes that
// changed the same row, the second to certify fails its COMMIT with 1213 (or is aborted by the
// first's write set arriving, and its COMMIT answers 1213 the same way). Nothing of it was
// committed: FST_FORK_SAFE_DB_TRANSACTION_ABORTED, and `{ retries }` runs it again.
// Two real nodes, one registration on each; both transactions have changed the row before either
// commits (an event orders them, not a sleep).

let cluster: GaleraCluster
const apps: FastifyInstance[] = []

beforeAll(async () => {
  cluster = await GaleraCluster.start({ nodes: 2 })
  await cluster.node(1).query('CREATE TABLE test.counters (id INT PRIMARY KEY, total INT NOT NULL) ENGINE=InnoDB')
}, 240_000)
afterAll(async () => { await cluster?.close() }, 60_000)

beforeEach(async () => {
  await cluster.node(1).query('REPLACE INTO test.counters VALUES (1, 100)')
  // Node 2 has applied it before either transaction begins.
  expect(await total()).toBe(100)
})
afterEach(async () => {
  await Promise.all(apps.splice(0).map((app) => app.close()))
})

async function onNode (index: number): Promise<FastifyInstance> {
  const { app } = buildApp()
  apps.push(app)
  await app.register(forkSafeDb, { connection: cluster.node(index).url, pool: { min: 1, max: 1 } })
  await app.ready()
  return app
}

/** The row as the cluster has it once every committed write set is applied on node 2. */
async function total (): Promise<number> {
  const connection = await createConnection(cluster.node(2).url)
  try {
    await connection.query('SET SESSION wsrep_sync_wait = 1')
    const [rows] = await connection.query('SELECT total FROM counters WHERE id = 1') as unknown as [Array<{ total: number }>]
    return rows[0].total
  } finally {
    await connection.end()
  }
}

/** The two transactions, and how many times their callbacks ran in all. */
function conflicting (first: FastifyInstance, second: FastifyInstance, retries: number): { outcomes: Array<Promise<unknown>>, runs: () => number } {
  const bothChanged = barrier(2)
  let runs = 0
  const add = (app: FastifyInstance, amount: number) => app.db.transaction(async (trx) => {
    runs += 1
    await trx('counters').where({ id: 1 }).increment('total', amount)
    await bothChanged()
  }, { retries })
  return { outcomes: [add(first, 1), add(second, 10)], runs: () => runs }
}

test('two transactions on two nodes that change the same row both succeed with retries, and the row holds both', async () => {
  const [first, second] = await Promise.all([onNode(1), onNode(2)])
  const { outcomes, runs } = conflicting(first, second, 3)
  await Promise.all(outcomes)
  expect(await total()).toBe(111)
  // The certification conflict happened, and its loser ran again.
  expect(runs()).toBe(3)
})

test('without retries, one of them fails with TRANSACTION_ABORTED, its cause the coded 1213', async () => {
  const [first, second] = await Promise.all([onNode(1), onNode(2)])
  const outcomes = await Promise.allSettled(conflicting(first, second, 0).outcomes)
  const failed = outcomes.filter((outcome) => outcome.status === 'rejected').map((outcome) => (outcome as PromiseRejectedResult).reason as unknown)
  expect(failed).toEqual([expect.objectContaining({
    code: 'FST_FORK_SAFE_DB_TRANSACTION_ABORTED',
    commitSent: false,
    cause: expect.objectContaining({ code: 'FST_FORK_SAFE_DB_DEADLOCK', errno: 1213 })
  })])
  expect([101, 110]).toContain(await total())
})
