import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'
import { request } from './helpers/http-client'
import { TcpProxy } from '../support/tcp-proxy'
import { watchTimers } from './helpers/timers'

// One outage, a few lines of the plugin's: one as it begins, a summary at most every 5 s while it
// lasts (how many borrows failed), one as it ends. Each failed request keeps its own 5xx line
// (Fastify's, at error level) and gets no second line from the plugin. The network is cut
// through the proxy: every open connection reset, every new one dropped.

const fixture = perTestUser()
const PLUGIN = 'fastify-fork-safe-db'
const SUMMARY_EVERY_MILLIS = 5000

let logged: LoggedApp
let proxy: TcpProxy

beforeEach(async () => {
  proxy = await TcpProxy.start({ target: { host: fixture.user.connection.host, port: fixture.user.connection.port } })
  logged = buildApp()
  await logged.app.register(forkSafeDb, { connection: proxy.urlFor(fixture.user.url), pool: { min: 1, max: 2 } })
  logged.app.get('/ping', async (request) => request.db.raw('SELECT 1'))
  await logged.app.listen({ port: 0, host: '127.0.0.1' })
})
afterEach(async () => {
  await logged.app.close()
  await proxy.close()
})

function cut (): void {
  proxy.refuse = true
  proxy.resetAll()
}

async function failing (count: number): Promise<number[]> {
  return Promise.all(Array.from({ length: count }, async () => (await request(logged.app, '/ping')).status))
}

// The plugin's own lines; knex's (source 'knex') say once per pooled connection that it died.
const pluginLines = () => logged.lines().filter((line) => line.plugin === PLUGIN && line.source === undefined && Number(line.level) >= 30 && line.msg !== 'connection pool warmed')
const knexLines = () => logged.lines().filter((line) => line.source === 'knex' && Number(line.level) >= 30)

test('logs an outage once as it begins and once as it ends, with the count of failed borrows, and no line of its own per request', async () => {
  cut()
  const statuses = await failing(60)
  expect(statuses).toEqual(Array(60).fill(503))
  proxy.refuse = false
  // The breaker lets a probe through within its backoff (at most 400 ms); until then, more fail.
  let failedMeanwhile = 0
  while ((await request(logged.app, '/ping')).status !== 200) failedMeanwhile += 1

  const own = pluginLines()
  expect(own.map((line) => [line.level, line.msg])).toEqual([
    [40, 'cannot connect to the database; holding connect attempts back'],
    [30, 'database reachable again']
  ])
  expect(own[1]).toMatchObject({ failedBorrows: 60 + failedMeanwhile })
  // At most one of knex's per pooled connection (pool.max is 2), none per request.
  expect(knexLines().length).toBeLessThanOrEqual(2)
  // Each failed request has exactly one 5xx line: Fastify's, at error level.
  const requestErrors = logged.lines().filter((line) => line.reqId !== undefined && Number(line.level) >= 40)
  expect(requestErrors).toHaveLength(60 + failedMeanwhile)
  expect(requestErrors.every((line) => line.level === 50)).toBe(true)
})

test('summarises a lasting outage at most every 5 s with the count of borrows that failed, and stops at close()', async () => {
  const timers = watchTimers()
  cut()
  const began = performance.now()
  expect(await failing(25)).toEqual(Array(25).fill(503))
  const summaries = () => pluginLines().filter((line) => String(line.msg).startsWith('database still unreachable'))
  // Waits for the first summary (an event the log carries), no longer than two periods.
  while (summaries().length === 0 && performance.now() - began < 2 * SUMMARY_EVERY_MILLIS) await new Promise((resolve) => setTimeout(resolve, 50))
  expect(summaries()).toEqual([expect.objectContaining({ level: 40, failedBorrows: 25, failedBorrowsInOutage: 25 })])
  expect(pluginLines().filter((line) => line.level === 40)).toHaveLength(2)

  await logged.app.close()
  const alive = await timers.alive()
  timers.stop()
  expect(alive).toEqual([])
})
