import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import Fastify, { type FastifyInstance } from 'fastify'
import { createConnection } from 'mysql2/promise'
import forkSafeDb, { channels, type PoolDestroyEvent, type QueryEndEvent } from '../lib'
import { APP_USER, type Mariadbd } from '../support/mariadbd'
import { ReplicationPair } from '../support/replication-pair'
import { request } from './helpers/http-client'

// Issue 20's switchover on a real primary/replica pair (GTID replication): one registration
// lists both (`role: 'primary'`), a pool of 4 warm connections serves HTTP writes from
// concurrent clients, and the pair swaps roles under that load (`SET GLOBAL read_only = 1` on
// the primary, `= 0` on the replica). The tests run in order on one pair and one app: a
// switchover is what happens to a running pool. This file exists to measure, so it prints the
// figures the README quotes.

jest.setTimeout(120_000)

const POOL_MAX = 4
const CLIENTS = 8
const WITHIN_MILLIS = 30_000

interface Answer {
  sentAt: number
  endAt: number
  status: number
  retryAfter?: string
  code?: string
  id?: number
}

let pair: ReplicationPair
let app: FastifyInstance
const ended: QueryEndEvent[] = []
const destroyed: PoolDestroyEvent[] = []
const onEnd = (message: unknown) => { ended.push(message as QueryEndEvent) }
const onDestroy = (message: unknown) => { destroyed.push(message as PoolDestroyEvent) }

beforeAll(async () => {
  pair = await ReplicationPair.start()
  await pair.primary.query('CREATE TABLE test.items (id INT AUTO_INCREMENT PRIMARY KEY, port INT NOT NULL)')
  await pair.waitForReplica()
  subscribe(channels.queryEnd, onEnd)
  subscribe(channels.poolDestroy, onDestroy)
  app = Fastify()
  await app.register(forkSafeDb, {
    connection: [pair.primary.url, pair.replica.url],
    role: 'primary',
    pool: { min: POOL_MAX, max: POOL_MAX },
    warmup: true
  })
  app.post('/items', async (req) => {
    const [id] = await req.db('items').insert({ port: req.db.raw('@@port') })
    return { id }
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
})

afterAll(async () => {
  unsubscribe(channels.queryEnd, onEnd)
  unsubscribe(channels.poolDestroy, onDestroy)
  await app?.close()
  await pair?.close()
})

async function until (condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + WITHIN_MILLIS
  while (!await condition()) {
    if (performance.now() > deadline) throw new Error(`${what} did not happen within ${WITHIN_MILLIS} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Thread ids of the app's user on `server`. */
async function threadsOn (server: Mariadbd): Promise<number[]> {
  return (await server.query('SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?', [APP_USER])).map((row) => Number(row.ID))
}

/** The port each of `ids` was written on (the new primary has every row: it replicated the old one's). */
async function portsOf (server: Mariadbd): Promise<Map<number, number>> {
  return new Map((await server.query('SELECT id, port FROM test.items')).map((row) => [Number(row.id), Number(row.port)]))
}

/** `CLIENTS` closed-loop HTTP clients posting inserts until stopped; every answer is kept. */
function load (): { answers: Answer[], stop: () => Promise<void> } {
  const answers: Answer[] = []
  const running = { on: true }
  const clients = Array.from({ length: CLIENTS }, async () => {
    while (running.on) {
      const sentAt = performance.now()
      const response = await request(app, '/items', { method: 'POST' })
      const body = JSON.parse(response.body) as { id?: number, code?: string }
      answers.push({ sentAt, endAt: performance.now(), status: response.status, retryAfter: response.headers['retry-after'] as string | undefined, code: body.code, id: body.id })
    }
  })
  return { answers, stop: async () => { running.on = false; await Promise.all(clients) } }
}

let switched: { answers: Answer[], at: number, warm: number[] }

test('under a load of writes, a switchover fails at most one write per pooled connection to the demoted primary, each a coded 503 with Retry-After, then none', async () => {
  const warm = await threadsOn(pair.primary)
  expect(warm).toHaveLength(POOL_MAX)
  const traffic = load()
  const { answers } = traffic
  await until(() => answers.filter((answer) => answer.status === 200).length >= 40, 'traffic')
  const switchAt = performance.now()
  await pair.switchover()
  const switchedAt = performance.now()
  await until(() => answers.filter((answer) => answer.sentAt > switchedAt && answer.status === 200).length >= 40, 'writes on the new primary')
  await traffic.stop()
  switched = { answers, at: switchAt, warm }

  const failed = answers.filter((answer) => answer.status !== 200)
  const refusals = ended.filter((event) => event.errorCode === 'FST_FORK_SAFE_DB_READ_ONLY' && event.connectionId !== null).map((event) => event.connectionId)
  const ports = await portsOf(pair.replica)
  const firstOnNew = Math.min(...answers.filter((answer) => answer.status === 200 && ports.get(answer.id ?? 0) === pair.replica.port).map((answer) => answer.endAt))
  const counts = new Map<string, number>()
  for (const answer of failed) counts.set(answer.code ?? String(answer.status), (counts.get(answer.code ?? String(answer.status)) ?? 0) + 1)
  const byCode = [...counts].map(([code, count]) => `${count} ${code}`).join(', ')
  console.log(`switchover under load (role primary, ${POOL_MAX} pooled connections, ${CLIENTS} clients): ${refusals.length} statements refused on ${new Set(refusals).size} pooled connections; ` +
    `${failed.length} failed requests (${byCode}); no server took writes for ${Math.round(switchedAt - switchAt)} ms (demote, then promote); ` +
    `first write on the new primary ${Math.round(firstOnNew - switchAt)} ms after the demotion began (${Math.round(firstOnNew - switchedAt)} ms after the promotion returned)`)
  // At most one refused statement per pooled connection to the demoted primary.
  expect(new Set(refusals).size).toBe(refusals.length)
  expect(refusals.every((id) => warm.includes(id as number))).toBe(true)
  // Every failure is retryable and says so: the statement refused, or a borrow while no server took writes.
  for (const answer of failed) {
    expect(answer).toMatchObject({ status: 503, retryAfter: '1' })
    expect(['FST_FORK_SAFE_DB_READ_ONLY', 'FST_FORK_SAFE_DB_UNAVAILABLE']).toContain(answer.code)
  }
  // Then none: every write sent after the first one on the new primary succeeded.
  expect(answers.filter((answer) => answer.sentAt > firstOnNew && answer.status !== 200)).toEqual([])
  // Generous: rules out a wait for a probe back-off or a timeout, not a slow machine.
  expect(firstOnNew - switchedAt).toBeLessThan(5000)
})

test('the connections to the demoted primary are destroyed and leave its PROCESSLIST', async () => {
  await until(() => switched.warm.every((id) => destroyed.some((event) => event.connectionId === id)), 'the warm connections destroyed')
  await until(async () => (await threadsOn(pair.primary)).length === 0, 'no thread left on the demoted primary')
  expect(app.dbPool.stats().hosts.map((host) => [host.state, host.connections])).toEqual([['read-only', 0], ['up', POOL_MAX]])
})

test('switching back after the demoted primary was probed for a while reaches it without waiting for its probe back-off', async () => {
  // The demoted primary is probed with a back-off doubling to 2 s: wait for the probes that get
  // it there (each is a connection to it; the server counts them, nothing publishes them).
  const watcher = await createConnection({ host: '127.0.0.1', port: pair.primary.port, user: 'root' })
  const connections = async (): Promise<number> => {
    const [rows] = await watcher.query("SHOW GLOBAL STATUS LIKE 'Connections'")
    return Number((rows as Array<{ Value: string }>)[0].Value)
  }
  try {
    const before = await connections()
    await until(async () => await connections() >= before + 4, 'four probes of the demoted primary')
  } finally {
    await watcher.end()
  }
  const traffic = load()
  await until(() => traffic.answers.filter((answer) => answer.status === 200).length >= 40, 'traffic')
  const switchAt = performance.now()
  await pair.replica.demote()
  await pair.primary.promote()
  const switchedAt = performance.now()
  await until(() => traffic.answers.filter((answer) => answer.sentAt > switchedAt && answer.status === 200).length >= 40, 'writes on the old primary again')
  await traffic.stop()

  const ports = await portsOf(pair.primary)
  const firstBack = Math.min(...traffic.answers.filter((answer) => answer.status === 200 && answer.endAt > switchAt && ports.get(answer.id ?? 0) === pair.primary.port).map((answer) => answer.endAt))
  const failed = traffic.answers.filter((answer) => answer.status !== 200)
  console.log(`switch back under load: ${failed.length} failed requests (${[...new Set(failed.map((answer) => answer.code))].join(', ')}); ` +
    `no server took writes for ${Math.round(switchedAt - switchAt)} ms; first write on the old primary ${Math.round(firstBack - switchAt)} ms after the demotion began (${Math.round(firstBack - switchedAt)} ms after its promotion returned)`)
  for (const answer of failed) expect(answer).toMatchObject({ status: 503, retryAfter: '1' })
  expect(traffic.answers.filter((answer) => answer.sentAt > firstBack && answer.status !== 200)).toEqual([])
  // Under the 2 s probe cap the demoted primary had reached: it was tried again at once.
  expect(firstBack - switchedAt).toBeLessThan(2000)
})

test('after close() the app leaves no connection on either server', async () => {
  await app.close()
  for (const server of pair.nodes) await until(async () => (await threadsOn(server)).length === 0, `no connection left on port ${server.port}`)
})
