import { EventEmitter, once } from 'node:events'
import { request } from 'node:http'
import { join } from 'node:path'
import type * as ClusterModule from '../lib/cluster'
import { FST_FORK_SAFE_DB_CLUSTER_NOT_PRIMARY, FST_FORK_SAFE_DB_INVALID_OPTION } from '../lib/errors'
import { freePort } from '../support/private-server'

// fastify-fork-safe-db/cluster's primary, run in this process with real workers
// (test/fixtures/cluster-worker.js: Fastify and fastify-fork-safe-db/worker, no database). Its
// log lines are the record of what it did, in order.

const WORKER = join(__dirname, 'fixtures', 'cluster-worker.js')

interface Event { msg: string, workerPid?: number, replaces?: number, code?: number | null, [key: string]: unknown }

class Recorder extends EventEmitter {
  readonly events: Event[] = []
  readonly logger = {
    info: (details: object, msg: string) => this.#record(details, msg),
    warn: (details: object, msg: string) => this.#record(details, msg),
    error: (details: object, msg: string) => this.#record(details, msg)
  }

  #record (details: object, msg: string): void {
    this.events.push({ ...details, msg })
    this.emit('event')
  }

  named (msg: string): Event[] {
    return this.events.filter((event) => event.msg === msg)
  }

  /** Resolves with the `count`th event that matches, past or future. */
  async waitFor (match: (event: Event) => boolean, count = 1): Promise<Event> {
    for (;;) {
      const found = this.events.filter(match)
      if (found.length >= count) return found[count - 1]
      await once(this, 'event')
    }
  }
}

let running: ClusterModule.ForkSafeCluster | undefined

afterEach(async () => {
  await running?.close()
  running = undefined
})

/** A fresh copy of the module: startCluster() runs once per process, and each test is one primary. */
function clusterModule (): typeof ClusterModule {
  let loaded: typeof ClusterModule | undefined
  jest.isolateModules(() => { loaded = require('../lib/cluster') as typeof ClusterModule })
  return loaded!
}

async function start (recorder: Recorder, workers: number, env: Record<string, string> = {}, options: Partial<ClusterModule.ClusterOptions> = {}): Promise<{ cluster: ClusterModule.ForkSafeCluster, port: number }> {
  const port = await freePort()
  running = clusterModule().startCluster({ workers, exec: WORKER, env: { PORT: String(port), ...env }, stopSignals: [], rollSignals: [], logger: recorder.logger, ...options })
  return { cluster: running, port }
}

function get (port: number, path: string): Promise<{ pid: number, asked?: boolean }> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, agent: false }, (response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => { body += chunk.toString() })
      response.on('end', () => resolve(JSON.parse(body)))
    }).on('error', reject).end()
  })
}

/** The most processes alive at once, from the order of `worker started` and `worker exited`/`worker died` lines. */
function mostAlive (events: readonly Event[]): number {
  let alive = 0
  let most = 0
  for (const event of events) {
    if (event.msg === 'worker started') most = Math.max(most, ++alive)
    if (event.msg === 'worker exited' || event.msg === 'worker died; respawning') alive -= 1
  }
  return most
}

test.each<[string, unknown, RegExp]>([
  ['an unknown option', { worker: 2 }, /cluster option worker is not a known option; expected one of: workers, exec/],
  ['workers below 1', { workers: 0 }, /cluster option workers must be an integer from 1 to 1024, got `0` \(number\)/],
  ['a stop signal that is not one', { stopSignals: ['HUP'] }, /cluster option stopSignals must be an array of signal names such as 'SIGTERM', got an array/],
  ['an env value that is not a string', { env: { PORT: 3000 } }, /cluster option env.PORT must be a string, got `3000` \(number\)/],
  ['a logger without warn', { logger: { info () {}, error () {} } }, /cluster option logger must be an object with info, warn and error methods/],
  ['a zero startMillis', { startMillis: 0 }, /cluster option startMillis must be an integer from 1 to 2147483647, got `0` \(number\)/]
])('rejects %s with FST_FORK_SAFE_DB_INVALID_OPTION, forking nothing', (_case, options, message) => {
  const { startCluster } = clusterModule()
  const call = () => startCluster(options as ClusterModule.ClusterOptions)
  expect(call).toThrow(FST_FORK_SAFE_DB_INVALID_OPTION)
  expect(call).toThrow(message)
})

test('starts the first worker alone and the others once it listens; ready resolves once all listen', async () => {
  const recorder = new Recorder()
  const { cluster } = await start(recorder, 3)
  expect(await cluster.ready).toBe(true)
  const lines = recorder.events.map((event) => event.msg)
  expect(lines.slice(0, 3)).toEqual([`primary ${process.pid} started`, 'worker started', 'worker listening'])
  expect(recorder.named('worker started')).toHaveLength(3)
  expect(lines[lines.length - 1]).toBe('all workers listening')
  expect(cluster.servingPids()).toHaveLength(3)
})

test('startCluster() a second time in one primary throws FST_FORK_SAFE_DB_CLUSTER_NOT_PRIMARY', async () => {
  const recorder = new Recorder()
  const port = await freePort()
  const module = clusterModule()
  running = module.startCluster({ workers: 1, exec: WORKER, env: { PORT: String(port) }, stopSignals: [], rollSignals: [], logger: recorder.logger })
  expect(() => module.startCluster({ workers: 1, exec: WORKER })).toThrow(FST_FORK_SAFE_DB_CLUSTER_NOT_PRIMARY)
  await running.ready
})

test('a roll replaces one worker at a time, each replacement listening before its predecessor is told to retire', async () => {
  const recorder = new Recorder()
  const { cluster } = await start(recorder, 3)
  await cluster.ready
  const before = cluster.servingPids()
  await cluster.roll()
  const { events } = recorder
  for (const pid of before) {
    const replacement = events.findIndex((event) => event.msg === 'worker started' && event.replaces === pid)
    const replacementPid = events[replacement].workerPid
    const listening = events.findIndex((event) => event.msg === 'worker listening' && event.workerPid === replacementPid)
    const exited = events.findIndex((event) => event.msg === 'worker exited' && event.workerPid === pid)
    expect(replacement).toBeGreaterThan(-1)
    expect(listening).toBeGreaterThan(replacement)
    expect(exited).toBeGreaterThan(listening)
    expect(events[exited].code).toBe(0)
  }
  // workers + 1 at most: the budget a recycle or a roll needs.
  expect(mostAlive(events)).toBe(4)
  expect(cluster.servingPids().filter((pid) => before.includes(pid))).toEqual([])
  expect(recorder.named('rolling restart finished')).toHaveLength(1)
})

test('a worker that asks to be recycled is retired once its replacement listens', async () => {
  const recorder = new Recorder()
  const { cluster, port } = await start(recorder, 1)
  await cluster.ready
  const { pid, asked } = await get(port, '/recycle')
  expect(asked).toBe(true)
  const exited = await recorder.waitFor((event) => event.msg === 'worker exited' && event.workerPid === pid)
  expect(exited.code).toBe(0)
  const replacement = recorder.named('worker started').find((event) => event.replaces === pid)
  expect(recorder.events.findIndex((event) => event.msg === 'worker listening' && event.workerPid === replacement?.workerPid))
    .toBeLessThan(recorder.events.indexOf(exited))
  expect((await get(port, '/')).pid).toBe(replacement?.workerPid)
})

test('close() during a roll starts nothing more, and every worker drains and exits 0', async () => {
  const recorder = new Recorder()
  const { cluster } = await start(recorder, 2)
  await cluster.ready
  const rolled = cluster.roll()
  await recorder.waitFor((event) => event.msg === 'worker started' && event.replaces !== undefined)
  await cluster.close('test')
  await rolled
  await cluster.closed
  const stop = recorder.events.findIndex((event) => event.msg === 'shutting down: draining every worker')
  expect(recorder.events.slice(stop).filter((event) => event.msg === 'worker started')).toEqual([])
  // The two workers and the replacement that was starting (retired once it listened).
  expect(recorder.named('worker exited').map((event) => event.code)).toEqual([0, 0, 0])
  expect(recorder.named('rolling restart finished')).toEqual([])
})

test('a worker that does not listen within startMillis is killed and respawned with backoff; close() then resolves ready with false', async () => {
  const recorder = new Recorder()
  const { cluster } = await start(recorder, 1, { NEVER_LISTEN: '1' }, { startMillis: 300 })
  await recorder.waitFor((event) => event.msg === 'worker died; respawning', 2)
  expect(recorder.named('worker did not listen within startMillis (does it register fastify-fork-safe-db/worker and call listen()?): killing it')).toHaveLength(2)
  expect(recorder.named('worker died; respawning').map((event) => [event.signal, event.respawnInMs])).toEqual([['SIGKILL', 0], ['SIGKILL', 250]])
  await cluster.close()
  expect(await cluster.ready).toBe(false)
})

test('requestRecycle() does nothing outside a worker of startCluster()', () => {
  expect(clusterModule().requestRecycle()).toBe(false)
})

test('a logger that throws (a write to a closed terminal) does not stop a start or a drain', async () => {
  const fail = () => { throw new Error('EIO: write to a closed terminal') }
  const port = await freePort()
  running = clusterModule().startCluster({ workers: 1, exec: WORKER, env: { PORT: String(port) }, stopSignals: [], rollSignals: [], logger: { info: fail, warn: fail, error: fail } })
  expect(await running.ready).toBe(true)
  await running.close()
  expect(running.servingPids()).toEqual([])
})
