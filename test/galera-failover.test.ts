import Fastify, { type FastifyInstance } from 'fastify'
import { createConnection, type Connection } from 'mysql2/promise'
import forkSafeDb from '../lib'
import { GaleraCluster, requireGalera } from '../support/galera-cluster'
import { APP_USER } from '../support/mariadbd'
import { request } from './helpers/http-client'

// Issue 20's end-to-end failover on a real 3-node Galera cluster (the kit's fast eviction):
// one registration lists the three nodes (`sequential`), a route inserts a row and answers its
// id, and concurrent HTTP clients keep it busy while the node in use is SIGKILLed, then frozen
// with SIGSTOP. The tests run in order on one cluster and one app, because failover and
// failback are what happens to a running pool. This file exists to measure, so it prints the
// figures the README quotes.

// A Galera boot and each rejoin are state transfers: tens of seconds on a busy two-core machine.
jest.setTimeout(180_000)

// Longer than the survivors' write stall while they evict a dead node (about 2 s with the kit's
// eviction settings): a statement that waits for the cluster to take writes again completes
// instead of timing out. Short enough that a statement on a frozen node is given up quickly.
const QUERY_TIMEOUT_MILLIS = 3000
// A connect (and a KILL's connect) to a frozen node is given up after this.
const CONNECT_TIMEOUT_MILLIS = 2000
// lib/hosts/host-set.ts: a host out of rotation is probed again within 2 s.
const PROBE_CAP_MILLIS = 2000
const CLIENTS = 8
const POOL_MAX = 4
const WITHIN_MILLIS = 60_000

interface Answer {
  sentAt: number
  endAt: number
  status: number
  code?: string
  id?: number
}

let cluster: GaleraCluster
let app: FastifyInstance

beforeAll(async () => {
  requireGalera()
  cluster = await GaleraCluster.start({ nodes: 3 })
  await cluster.node(1).query('CREATE TABLE test.items (id INT AUTO_INCREMENT PRIMARY KEY, port INT NOT NULL)')
  await cluster.node(1).query('CREATE TABLE test.floor (id INT AUTO_INCREMENT PRIMARY KEY)')
  app = Fastify()
  await app.register(forkSafeDb, {
    connection: cluster.nodes.map((node) => `${node.url}?connectTimeout=${CONNECT_TIMEOUT_MILLIS}`),
    hostPolicy: 'sequential',
    queryTimeoutMillis: QUERY_TIMEOUT_MILLIS,
    pool: { min: POOL_MAX, max: POOL_MAX, acquireTimeoutMillis: 10_000 },
    warmup: true
  })
  app.post('/items', async (req) => {
    const [id] = await req.db('items').insert({ port: req.db.raw('@@port') })
    return { id }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
})

afterAll(async () => {
  await app?.close()
  await cluster?.close()
})

/** `CLIENTS` closed-loop HTTP clients posting inserts until stopped; every answer is kept. */
function load (): { answers: Answer[], stop: () => Promise<void> } {
  const answers: Answer[] = []
  const running = { on: true }
  const client = async (): Promise<void> => {
    while (running.on) {
      const sentAt = performance.now()
      const response = await request(app, '/items', { method: 'POST' })
      const body = JSON.parse(response.body) as { id?: number, code?: string }
      answers.push({ sentAt, endAt: performance.now(), status: response.status, code: body.code, id: body.id })
    }
  }
  const clients = Array.from({ length: CLIENTS }, client)
  return { answers, stop: async () => { running.on = false; await Promise.all(clients) } }
}

async function until (condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + WITHIN_MILLIS
  while (!await condition()) {
    if (performance.now() > deadline) throw new Error(`${what} did not happen within ${WITHIN_MILLIS} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/**
 * A direct connection to node `index`, opened now; `loop()` then sends a tiny INSERT again and
 * again until one is acknowledged and resolves when: the moment the cluster takes writes again.
 */
async function floorOn (index: number): Promise<{ loop: () => Promise<number> }> {
  const connection: Connection = await createConnection({ uri: cluster.node(index).url })
  return {
    loop: async () => {
      try {
        for (;;) {
          try {
            await connection.query('INSERT INTO floor () VALUES ()')
            return performance.now()
          } catch {
            // 1047 while the survivors form a new primary component: try again.
            await new Promise((resolve) => setTimeout(resolve, 5))
          }
        }
      } finally {
        await connection.end()
      }
    }
  }
}

/** The port each id was written on, read on `index` after every write the cluster committed. */
async function portsOn (index: number): Promise<Map<number, number>> {
  const connection = await createConnection({ uri: cluster.node(index).url })
  try {
    await connection.query('SET SESSION wsrep_sync_wait = 1')
    const [rows] = await connection.query('SELECT id, port FROM items')
    return new Map((rows as Array<{ id: number, port: number }>).map((row) => [row.id, row.port]))
  } finally {
    await connection.end()
  }
}

async function portOfNextStatement (): Promise<number> {
  const [rows] = await app.db.raw('SELECT @@port AS port')
  return Number((rows as Array<{ port: number }>)[0].port)
}

/** Requests unanswered at `at`. */
function inFlightAt (answers: readonly Answer[], at: number): number {
  return answers.filter((answer) => answer.sentAt <= at && answer.endAt > at).length
}

let killed: { answers: Answer[], at: number }

test('a SIGKILLed node in use fails only the requests in flight on it, each with a coded error, and the first success elsewhere follows the cluster taking writes again', async () => {
  expect(await portOfNextStatement()).toBe(cluster.node(1).port)
  const traffic = load()
  await until(() => traffic.answers.filter((answer) => answer.status === 200).length >= 40, 'traffic')
  const floor = await floorOn(2)
  const killAt = performance.now()
  const killing = cluster.node(1).kill()
  const waitFloor = floor.loop()
  await killing
  const floorAt = await waitFloor
  const ports = new Map<number, number>()
  await until(async () => {
    const successes = traffic.answers.filter((answer) => answer.endAt > killAt && answer.status === 200)
    if (successes.length < 40) return false
    for (const [id, port] of await portsOn(2)) ports.set(id, port)
    return successes.some((answer) => ports.get(answer.id ?? 0) !== cluster.node(1).port)
  }, 'a success on a survivor')
  await traffic.stop()
  killed = { answers: traffic.answers, at: killAt }
  const inFlight = inFlightAt(traffic.answers, killAt)

  const failed = traffic.answers.filter((answer) => answer.status !== 200)
  const firstElsewhere = Math.min(...traffic.answers
    .filter((answer) => answer.status === 200 && answer.endAt > killAt && ports.get(answer.id ?? 0) !== cluster.node(1).port)
    .map((answer) => answer.endAt))
  console.log(`Galera SIGKILL of the node in use (kit eviction): the survivors took writes again ${Math.round(floorAt - killAt)} ms after the kill; ` +
    `the app's first success on a survivor ${Math.round(firstElsewhere - killAt)} ms after the kill (${Math.round(firstElsewhere - floorAt)} ms after the survivors); ` +
    `${failed.length} failed requests of ${inFlight} in flight at the kill (${failed.map((answer) => answer.code).join(', ')})`)
  expect(failed.length).toBeLessThanOrEqual(Math.min(inFlight, POOL_MAX))
  for (const answer of failed) expect(answer.code).toMatch(/^FST_FORK_SAFE_DB_/)
  // Every failure was sent before the kill: none sent after it.
  expect(failed.filter((answer) => answer.sentAt > killAt)).toEqual([])
  // Not waiting for anything it should not: no probe back-off, no connect timeout to the dead node.
  expect(firstElsewhere - floorAt).toBeLessThan(PROBE_CAP_MILLIS + CONNECT_TIMEOUT_MILLIS)
})

test('every insert acknowledged before and after the kill is on the survivors', async () => {
  const ids = killed.answers.filter((answer) => answer.status === 200).map((answer) => answer.id as number)
  const ports = await portsOn(3)
  const lost = ids.filter((id) => !ports.has(id))
  console.log(`Galera SIGKILL: ${ids.length} acknowledged inserts, ${lost.length} lost`)
  expect(lost).toEqual([])
})

test('the killed node, started again and Synced, is used again for new statements (failback)', async () => {
  const started = performance.now()
  await cluster.node(1).start()
  await cluster.node(1).waitSynced()
  const synced = performance.now()
  await until(async () => await portOfNextStatement() === cluster.node(1).port, 'failback to node 1')
  console.log(`Galera failback: node 1 rejoined and Synced in ${Math.round(synced - started)} ms; statements landed on it ${Math.round(performance.now() - synced)} ms later`)
  for (let i = 0; i < 5; i++) expect(await portOfNextStatement()).toBe(cluster.node(1).port)
  expect(app.dbPool.stats().hosts.map((host) => host.state)).toEqual(['up', 'up', 'up'])
})

test('a node frozen with SIGSTOP while in use fails only requests in flight on it, each coded, within the query timeout and the KILL\'s connect bound', async () => {
  const traffic = load()
  await until(() => traffic.answers.filter((answer) => answer.status === 200).length >= 40, 'traffic')
  const freezeAt = performance.now()
  await cluster.node(1).freeze()
  try {
    const ports = new Map<number, number>()
    await until(async () => {
      const successes = traffic.answers.filter((answer) => answer.endAt > freezeAt && answer.status === 200)
      if (successes.length < 40) return false
      for (const [id, port] of await portsOn(2)) ports.set(id, port)
      return successes.some((answer) => ports.has(answer.id ?? 0) && ports.get(answer.id ?? 0) !== cluster.node(1).port)
    }, 'a success on a survivor')
    await traffic.stop()

    const unansweredAtFreeze = inFlightAt(traffic.answers, freezeAt)
    const failed = traffic.answers.filter((answer) => answer.status !== 200)
    const firstElsewhere = Math.min(...traffic.answers
      .filter((answer) => answer.status === 200 && answer.endAt > freezeAt && ports.get(answer.id ?? 0) !== cluster.node(1).port)
      .map((answer) => answer.endAt))
    console.log(`Galera SIGSTOP of the node in use: first success on a survivor ${Math.round(firstElsewhere - freezeAt)} ms after the freeze ` +
      `(queryTimeoutMillis ${QUERY_TIMEOUT_MILLIS}, connectTimeout ${CONNECT_TIMEOUT_MILLIS}); ` +
      `${failed.length} failed requests of ${unansweredAtFreeze} in flight at the freeze (${failed.map((answer) => answer.code).join(', ')})`)
    for (const answer of failed) expect(answer.code).toMatch(/^FST_FORK_SAFE_DB_/)
    expect(failed.length).toBeLessThanOrEqual(Math.min(unansweredAtFreeze, POOL_MAX))
    // Bounded by the statement's timeout and its KILL's connect, plus a probe back-off: never a hang.
    expect(firstElsewhere - freezeAt).toBeLessThan(QUERY_TIMEOUT_MILLIS + CONNECT_TIMEOUT_MILLIS + PROBE_CAP_MILLIS + 5000)
    expect(app.dbPool.stats().hosts[0].state).toBe('down')
  } finally {
    await cluster.node(1).thaw()
  }
})

test('the thawed node, Synced again, is used again for new statements', async () => {
  await cluster.node(1).waitSynced()
  await until(async () => await portOfNextStatement() === cluster.node(1).port, 'failback to node 1')
  for (let i = 0; i < 5; i++) expect(await portOfNextStatement()).toBe(cluster.node(1).port)
})

test('after close() the app leaves no connection on any node', async () => {
  await app.close()
  for (const node of cluster.nodes) {
    await until(async () => (await node.query('SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?', [APP_USER])).length === 0, `no connection left on node ${node.index}`)
  }
})
