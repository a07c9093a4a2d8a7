import { connect, type Socket } from 'node:net'
import { join } from 'node:path'
import { perTestUser } from './helpers/database'
import { prepareSchema } from '../example-app/schema'
import { holdsListener } from '../support/held-sockets'
import { freePort } from '../support/private-server'
import { failures, Loads, type Load } from '../support/http-load'
import { Pm2 } from '../support/pm2'

// The README's pm2 recipe as it is given, run with the real pm2 (cluster mode, whose primary is
// pm2's daemon built on node:cluster): example-app/ecosystem.config.js as it is (2 instances,
// wait_ready), the example's default pool, clients that open a new connection per request and
// one that keeps its connection. Under that load the app is reloaded several times in a row,
// scaled up and down, then deleted. Not one request may fail or hang; every instance that leaves
// finishes its retire without waiting out closeMillis (its own `worker retired` report says so);
// the server's connections stay within the budget the workers were given.
//
// Before each reload a client connects ahead of its request and sends nothing (a browser's
// preconnect, a proxy's pool). Node does not count such a connection as idle, so an instance that
// holds one used to wait out closeMillis for it and then destroy it.

const ECOSYSTEM = join(__dirname, '..', 'example-app', 'ecosystem.config.js')
const APP = 'users-api'
// ecosystem.config.js's default, and example-app/config.ts's default pool (DB_POOL_MIN, DB_POOL_MAX).
const INSTANCES = 2
const POOL = { min: 2, max: 10 }
const RELOADS = 2
// pm2 replaces one instance at a time when there are two, two at a time beyond
// (PM2_CONCURRENT_ACTIONS): the example's budget counts two replacements (OVERLAP in ecosystem.config.js).
const BUDGET_PROCESSES = INSTANCES + 2
const POLL_MILLIS = 25
const LOG_WAIT_MILLIS = 5000

interface RetireReport { reason: string, openAtStart: number, closedUnused: number, destroyed: number, closeTimedOut: boolean, disconnection: string }

const fixture = perTestUser({ ownDatabase: true })
let pm2: Pm2 | undefined
const loads = new Loads()
const silentClients: Socket[] = []

afterEach(async () => {
  // Stopped first, settled once the app is gone: whatever is still in flight then fails at once.
  loads.stop()
  for (const socket of silentClients.splice(0)) socket.destroy()
  await pm2?.kill()
  pm2 = undefined
  await loads.settled()
})

/** Samples the user's PROCESSLIST count until stopped; resolves with the highest count seen. */
function watchConnections (user: string): { stop: () => Promise<number> } {
  let highest = 0
  const state = { running: true }
  const polling = (async () => {
    while (state.running) {
      highest = Math.max(highest, await fixture.database.countConnections(user))
      await new Promise((resolve) => setTimeout(resolve, POLL_MILLIS))
    }
  })()
  return { stop: async () => { state.running = false; await polling; return highest } }
}

/** A client that connects and sends nothing; resolves with its socket once connected, and `closed` once the server closed it. */
function connectSilently (port: number): Promise<{ socket: Socket, closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    silentClients.push(socket)
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
    socket.once('error', reject)
    socket.once('connect', () => resolve({ socket, closed }))
  })
}

/** The `worker retired` reports of the app's instances, once `count` of them are in the logs (pm2 writes them as they come). */
async function retireReports (count: number): Promise<RetireReport[]> {
  const deadline = performance.now() + LOG_WAIT_MILLIS
  for (;;) {
    const reports = (await pm2!.appLog(APP)).filter((entry) => entry.msg === 'worker retired') as unknown as RetireReport[]
    if (reports.length >= count || performance.now() > deadline) return reports
    await new Promise((resolve) => setTimeout(resolve, POLL_MILLIS))
  }
}

// pm2's daemon takes the policy from its environment when it starts: Node's default
// (round-robin) or SCHED_NONE, which the README recommends.
test.each(['rr', 'none'])('under NODE_CLUSTER_SCHED_POLICY=%s, the README recipe reloads twice in a row, scales and deletes under load without a failed or hung request, every retire well before closeMillis, within the connection budget', async (policy) => {
  // Under pm2 there is no primary of ours to create the schema: it is prepared first, as a
  // deployment runs its migrations before `pm2 start`.
  await prepareSchema(fixture.user.url)
  const port = await freePort()
  // LOG_LEVEL info: each instance's retire report is in pm2's log files.
  pm2 = await Pm2.create({ MYSQL_URL: fixture.user.url, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'info', PM2_APP_NAME: APP, NODE_CLUSTER_SCHED_POLICY: policy })
  const connections = watchConnections(fixture.user.user)
  try {
    // wait_ready: `pm2 start` returns once every instance has sent 'ready' (pool and request path warm).
    await pm2.run('start', ECOSYSTEM)
    const online = await pm2.list()
    expect(online.map((entry) => entry.status)).toEqual(Array(INSTANCES).fill('online'))
    // The daemon runs the policy asked for: under SCHED_NONE the workers hold the listening socket.
    expect(await holdsListener(online[0].pid, port)).toBe(policy === 'none')

    const common = { port, path: (index: number) => `/users/${(index % 1000) + 1}`, requests: Number.MAX_SAFE_INTEGER, timeoutMillis: 5000 }
    const fresh = loads.start({ ...common, concurrency: 3, keepAlive: false })
    const kept: Load = loads.start({ ...common, concurrency: 1, keepAlive: true })
    await fresh.reached(100)

    const silent: Array<Promise<void>> = []
    for (let reload = 0; reload < RELOADS; reload++) {
      // Held by an instance this reload replaces (or, handed over during it, by a replacement
      // that a later step retires).
      silent.push((await connectSilently(port)).closed)
      const before = new Set((await pm2.list()).map((entry) => entry.pid))
      await pm2.run('reload', APP)
      const after = await pm2.list()
      expect(after.filter((entry) => before.has(entry.pid))).toEqual([])
      expect(after.map((entry) => entry.status)).toEqual(Array(INSTANCES).fill('online'))
      await fresh.reached(fresh.outcomes.length + 50)
    }
    await pm2.run('scale', APP, String(INSTANCES + 1))
    expect(await pm2.list()).toHaveLength(INSTANCES + 1)
    await pm2.run('scale', APP, String(INSTANCES - 1))
    expect(await pm2.list()).toHaveLength(INSTANCES - 1)
    await fresh.reached(fresh.outcomes.length + 100)

    fresh.stop()
    kept.stop()
    const outcomes = [...await fresh.done, ...await kept.done]
    expect(failures(outcomes)).toEqual([])
    expect(outcomes.length).toBeGreaterThan(400)

    await pm2.run('delete', APP)
    expect(await pm2.list()).toEqual([])
    // Every silent connection was closed by the instance that held it.
    await Promise.all(silent)

    // Each instance that ran retired once: 2 per reload, 2 scaled away, the last one deleted.
    const retired = INSTANCES * RELOADS + 2 + 1
    const reports = await retireReports(retired)
    expect(reports).toHaveLength(retired)
    // None waited out closeMillis: no connection had to be destroyed, fastify.close() finished
    // in time, the primary confirmed the disconnection; the silent connections were closed as
    // carrying no request.
    for (const report of reports) {
      expect(report).toMatchObject({ reason: 'SIGINT', destroyed: 0, closeTimedOut: false, disconnection: 'acknowledged' })
    }
    expect(reports.reduce((sum, report) => sum + report.closedUnused, 0)).toBe(RELOADS)
    expect((await pm2.appLog(APP)).filter((entry) => /closeMillis/.test(String(entry.msg)))).toEqual([])
    expect(await fixture.database.settledCount(fixture.user.user, 0)).toBe(0)
  } finally {
    const highest = await connections.stop()
    expect(highest).toBeLessThanOrEqual(BUDGET_PROCESSES * POOL.max)
    expect(highest).toBeGreaterThanOrEqual(INSTANCES * POOL.min)
  }
}, 240_000)
