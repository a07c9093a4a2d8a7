import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import Fastify, { type FastifyInstance } from 'fastify'
import forkSafeDb, { channels, type PoolAcquireEvent, type PoolReleaseEvent } from '../lib'
import { perTestUser } from './helpers/database'
import { request } from './helpers/http-client'

// `dbPool.refresh()` (a DNS name or VIP that moved): every connection that exists at the call is
// retired (idle ones now, busy ones when released) and replaced, with no request failing.

const fixture = perTestUser()
let app: FastifyInstance | undefined

afterEach(async () => {
  await app?.close()
  app = undefined
})

async function start (pool: { min: number, max: number }): Promise<FastifyInstance> {
  const built = Fastify()
  app = built
  await built.register(forkSafeDb, { connection: fixture.user.url, pool, warmup: true })
  built.get('/id', async (req) => {
    // A few milliseconds each, so that connections are busy when refresh() is called.
    const [[row]] = await req.db.raw('SELECT CONNECTION_ID() AS id, SLEEP(0.002) AS slept') as [Array<{ id: number }>]
    return { id: row?.id }
  })
  await built.listen({ port: 0, host: '127.0.0.1' })
  return built
}

interface Load {
  /** Resolves once `count` answers arrived. */
  answered: (count: number) => Promise<void>
  /** Every answer: status and the connection id the request ran on. */
  done: Promise<Array<{ status: number, id: number | undefined }>>
}

/** `total` requests, `concurrency` at a time. */
function load (target: FastifyInstance, total: number, concurrency: number): Load {
  const answers: Array<{ status: number, id: number | undefined }> = []
  const waiters: Array<{ count: number, resolve: () => void }> = []
  let next = 0
  const worker = async () => {
    while (next < total) {
      next += 1
      const answer = await request(target, '/id')
      answers.push({ status: answer.status, id: answer.status === 200 ? (JSON.parse(answer.body) as { id: number }).id : undefined })
      for (const waiter of waiters.filter((one) => answers.length >= one.count)) {
        waiters.splice(waiters.indexOf(waiter), 1)
        waiter.resolve()
      }
    }
  }
  const done = Promise.all(Array.from({ length: concurrency }, worker)).then(() => answers)
  return {
    answered: async (count) => { if (answers.length < count) await new Promise<void>((resolve) => waiters.push({ count, resolve })) },
    done
  }
}

test('refresh() under load changes every connection id, fails no request, and leaves pool.min new connections', async () => {
  const target = await start({ min: 4, max: 4 })
  const before = await fixture.database.connectionIds(fixture.user.user)
  expect(before).toHaveLength(4)
  const running = load(target, 120, 8)
  await running.answered(20)
  const { retired } = await target.dbPool.refresh()
  const answers = await running.done
  expect(retired).toBe(4)
  expect(answers.filter((answer) => answer.status !== 200)).toEqual([])
  // After the refresh resolved every old connection was closed: the server has only new ones.
  expect(await fixture.database.settledCount(fixture.user.user, 4)).toBe(4)
  const after = await fixture.database.connectionIds(fixture.user.user)
  expect(after.filter((id) => before.includes(id))).toEqual([])
})

test('refresh() waits for an open transaction, and retires its connection after COMMIT', async () => {
  const target = await start({ min: 2, max: 2 })
  const before = await fixture.database.connectionIds(fixture.user.user)
  const trx = await target.db.transaction()
  const [[own]] = await trx.raw('SELECT CONNECTION_ID() AS id') as [Array<{ id: number }>]
  let settled = false
  const refreshed = target.dbPool.refresh().finally(() => { settled = true })
  // The transaction goes on, on its own connection.
  const [[still]] = await trx.raw('SELECT CONNECTION_ID() AS id') as [Array<{ id: number }>]
  expect(still?.id).toBe(own?.id)
  expect(settled).toBe(false)
  expect(await fixture.database.connectionIds(fixture.user.user)).toContain(own?.id)
  await trx.commit()
  expect(await refreshed).toEqual({ retired: 2 })
  expect(await fixture.database.settledCount(fixture.user.user, 2)).toBe(2)
  const after = await fixture.database.connectionIds(fixture.user.user)
  expect(after.filter((id) => before.includes(id))).toEqual([])
})

test('a retired connection is never lent again, under load and refreshes one after another', async () => {
  const target = await start({ min: 4, max: 4 })
  const events: Array<{ kind: 'acquire' | 'release', id: number | null }> = []
  const onAcquire = (message: unknown) => { const event = message as PoolAcquireEvent; if (event.connectionId !== undefined) events.push({ kind: 'acquire', id: event.connectionId }) }
  const onRelease = (message: unknown) => { events.push({ kind: 'release', id: (message as PoolReleaseEvent).connectionId }) }
  subscribe(channels.poolAcquire, onAcquire)
  subscribe(channels.poolRelease, onRelease)
  try {
    const running = load(target, 300, 8)
    const retiredAt: Array<{ at: number, ids: number[] }> = []
    for (const count of [20, 60, 100, 140, 180]) {
      await running.answered(count)
      // The connections that exist now: lent at least once, or warm.
      const ids = await fixture.database.connectionIds(fixture.user.user)
      retiredAt.push({ at: events.length, ids })
      await target.dbPool.refresh()
    }
    const answers = await running.done
    expect(answers.filter((answer) => answer.status !== 200)).toEqual([])
    // Once a connection that existed at a refresh was released after it, it was never lent again.
    const violations: string[] = []
    for (const { at, ids } of retiredAt) {
      for (const id of ids) {
        const released = events.findIndex((event, index) => index >= at && event.kind === 'release' && event.id === id)
        if (released === -1) continue
        const lentAgain = events.findIndex((event, index) => index > released && event.kind === 'acquire' && event.id === id)
        if (lentAgain !== -1) violations.push(`connection ${id} lent again after its refresh`)
      }
    }
    expect(violations).toEqual([])
    const seen = new Set(answers.map((answer) => answer.id))
    console.log(`refresh stress: 300 requests, 5 refreshes, ${seen.size} connection ids used, ${answers.length} answered 200`)
  } finally {
    unsubscribe(channels.poolAcquire, onAcquire)
    unsubscribe(channels.poolRelease, onRelease)
  }
})

test('refresh() before the pool is built retires nothing', async () => {
  const built = Fastify()
  app = built
  await built.register(forkSafeDb, { connection: fixture.user.url, warmup: false })
  await built.ready()
  expect(await built.dbPool.refresh()).toEqual({ retired: 0 })
})
