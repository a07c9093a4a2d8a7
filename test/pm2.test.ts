import { join } from 'node:path'
import { perTestUser } from './helpers/database'
import { prepareSchema } from '../example-app/schema'
import { holdsListener } from '../support/held-sockets'
import { freePort } from '../support/private-server'
import { failures, Loads, type Load } from '../support/http-load'
import { Pm2 } from '../support/pm2'

// The README's pm2 recipe, run with the real pm2 (cluster mode, whose primary is pm2's daemon
// built on node:cluster): example-app/ecosystem.config.js starts the users API with wait_ready;
// under load it is reloaded, scaled up and down, then deleted. Not one request may fail or
// hang, and the server's connections stay within the budget the workers were given.

const ECOSYSTEM = join(__dirname, '..', 'example-app', 'ecosystem.config.js')
const INSTANCES = 3
const POOL_SIZE = 2
// pm2 reloads two instances at a time once there are more than two (PM2_CONCURRENT_ACTIONS):
// the budget counts them next to the instances (see example-app/pm2-worker.ts).
const BUDGET_PROCESSES = INSTANCES + 2
const POLL_MILLIS = 25

const fixture = perTestUser({ ownDatabase: true })
let pm2: Pm2 | undefined
let load: Load | undefined
const loads = new Loads()

afterEach(async () => {
  // Stopped first, settled once the app is gone: whatever is still in flight then fails at once.
  loads.stop()
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

// pm2's daemon takes the policy from its environment when it starts: Node's default
// (round-robin) or SCHED_NONE, which the README recommends.
test.each(['rr', 'none'])('under NODE_CLUSTER_SCHED_POLICY=%s, pm2 starts, reloads, scales and deletes the app under load without a failed or hung request, within the connection budget', async (policy) => {
  // Under pm2 there is no primary of ours to create the schema: it is prepared first, as a
  // deployment runs its migrations before `pm2 start`.
  await prepareSchema(fixture.user.url)
  const port = await freePort()
  pm2 = await Pm2.create({
    MYSQL_URL: fixture.user.url,
    PORT: String(port),
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    WORKERS: String(INSTANCES),
    DB_POOL_MIN: String(POOL_SIZE),
    DB_POOL_MAX: String(POOL_SIZE),
    PM2_APP_NAME: 'users-api',
    NODE_CLUSTER_SCHED_POLICY: policy
  })
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
    load = loads.start({ ...common, concurrency: 1, keepAlive: true })
    await fresh.reached(100)
    const before = new Set((await pm2.list()).map((entry) => entry.pid))

    await pm2.run('reload', 'users-api')
    const reloaded = await pm2.list()
    expect(reloaded.filter((entry) => before.has(entry.pid))).toEqual([])
    await pm2.run('scale', 'users-api', String(INSTANCES + 1))
    expect(await pm2.list()).toHaveLength(INSTANCES + 1)
    await pm2.run('scale', 'users-api', String(INSTANCES - 1))
    expect(await pm2.list()).toHaveLength(INSTANCES - 1)
    await fresh.reached(fresh.outcomes.length + 100)

    fresh.stop()
    load.stop()
    const outcomes = [...await fresh.done, ...await load.done]
    expect(failures(outcomes)).toEqual([])
    expect(outcomes.length).toBeGreaterThan(200)

    await pm2.run('delete', 'users-api')
    expect(await pm2.list()).toEqual([])
    expect(await fixture.database.settledCount(fixture.user.user, 0)).toBe(0)
  } finally {
    const highest = await connections.stop()
    expect(highest).toBeLessThanOrEqual(BUDGET_PROCESSES * POOL_SIZE)
    expect(highest).toBeGreaterThanOrEqual(INSTANCES * POOL_SIZE)
  }
}, 240_000)
