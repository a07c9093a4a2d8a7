import { spawn } from 'node:child_process'
import { once } from 'node:events'
import http from 'node:http'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import type { RowDataPacket } from 'mysql2/promise'
import pino from 'pino'
import { perTestUser } from './helpers/database'
import { startMetricsEndpoint } from '../example-app/metrics-endpoint'
import { ExampleProcess, EXAMPLE_ENTRY } from '../support/example-process'
import { freePort } from '../support/private-server'

// The cluster example's GET /metrics, on the primary's own listener: every worker's pool metrics
// in one scrape, each series labelled with its worker's pid, and a worker that does not answer
// (stopped by SIGSTOP, or killed, here) left out and counted, within the scrape's bound; workers
// that start or leave during a roll are counted as such, not as missing.

const fixture = perTestUser({ ownDatabase: true })
/** The example's default METRICS_TIMEOUT_MILLIS. */
const BOUND_MILLIS = 1000
/** A scrape that takes longer than this has not been bounded by the example. */
const CLIENT_TIMEOUT_MILLIS = 4 * BOUND_MILLIS
/** Generous: what a bounded scrape may take beyond its bound (asking, rendering, a busy machine). */
const BOUND_SLACK_MILLIS = 1000
/** A timer measured from another process may seem to fire this much early (millisecond clocks). */
const CLOCK_SLACK_MILLIS = 10
const ROLL_MILLIS = 60_000

let example: ExampleProcess | undefined
let stopped: number | undefined

afterEach(async () => {
  // A stopped worker would not drain: let it run again whatever the test did.
  if (stopped !== undefined) process.kill(stopped, 'SIGCONT')
  stopped = undefined
  await example?.kill()
  example = undefined
})

interface Series { name: string, labels: Record<string, string>, value: number }

/** Prometheus' text format, series lines only (`name{label="value",…} number`). */
function parse (text: string): Series[] {
  return text.split('\n').filter((line) => line !== '' && !line.startsWith('#')).map((line) => {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null) throw new Error(`not a Prometheus series line: ${line}`)
    const labels: Record<string, string> = {}
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[key] = value
    return { name: match[1], labels, value: Number(match[3]) }
  })
}

/** GET /metrics; rejects if the answer takes longer than CLIENT_TIMEOUT_MILLIS. `sent` runs once the request is written. */
function scrape (port: number, sent = () => {}): Promise<{ status: number, type: string | undefined, series: Series[] }> {
  return new Promise((resolve, reject) => {
    const request = http.get({ host: '127.0.0.1', port, path: '/metrics', agent: false, timeout: CLIENT_TIMEOUT_MILLIS }, (response) => {
      let text = ''
      response.setEncoding('utf8').on('data', (chunk: string) => { text += chunk })
      response.on('end', () => {
        const status = response.statusCode ?? 0
        resolve({ status, type: response.headers['content-type'], series: status === 200 ? parse(text) : [] })
      })
    })
    request.on('timeout', () => request.destroy(new Error(`no answer from /metrics within ${CLIENT_TIMEOUT_MILLIS} ms`)))
    request.on('error', reject)
    request.on('finish', sent)
  })
}

/** scrape(), and how long it took. */
async function timedScrape (port: number, sent?: () => void): Promise<Awaited<ReturnType<typeof scrape>> & { millis: number }> {
  const started = performance.now()
  const result = await scrape(port, sent)
  return { ...result, millis: performance.now() - started }
}

/** Each pid's open connections as its `db_client_connection_count` series say (idle and used). */
function connectionsByPid (series: readonly Series[]): Map<number, number> {
  const counts = new Map<number, number>()
  for (const { name, labels, value } of series) {
    if (name !== 'db_client_connection_count') continue
    const pid = Number(labels.process_pid)
    counts.set(pid, (counts.get(pid) ?? 0) + value)
  }
  return counts
}

const workersOutcome = (series: readonly Series[]) =>
  Object.fromEntries(series.filter((one) => one.name === 'example_metrics_workers').map((one) => [one.labels.outcome, one.value]))
const sum = (counts: Map<number, number>) => [...counts.values()].reduce((total, count) => total + count, 0)

/** Connections to the example's database in the server's process list (not the admin's own). */
async function processListCount (): Promise<number> {
  const [rows] = await fixture.database.admin.query<RowDataPacket[]>(
    'SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()', [fixture.user.connection.database])
  return Number(rows[0].n)
}

/** The process list's count once it equals `expected` (the server drops a closed thread shortly after), or the last one seen. */
async function settledProcessList (expected: number): Promise<number> {
  const deadline = performance.now() + 3000
  let count = await processListCount()
  while (count !== expected && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    count = await processListCount()
  }
  return count
}

test('serves every worker\'s pool metrics by pid, with totals equal to the process list; a stopped worker is left out and counted, within the bound', async () => {
  const metricsPort = await freePort()
  example = await ExampleProcess.start({ MYSQL_URL: fixture.user.url, WORKERS: '3', METRICS_PORT: String(metricsPort) })
  const workerPids = example.logged('worker listening').map((line) => line.workerPid as number)
  expect(workerPids).toHaveLength(3)

  const before = await scrape(metricsPort)
  expect(before.status).toBe(200)
  expect(before.type).toBe('text/plain; version=0.0.4; charset=utf-8')
  expect(workersOutcome(before.series)).toEqual({ answered: 3, starting: 0, leaving: 0, missing: 0 })
  const counts = connectionsByPid(before.series)
  expect([...counts.keys()].sort()).toEqual([...workerPids].sort())
  for (const count of counts.values()) expect(count).toBeGreaterThan(0)
  expect(await settledProcessList(sum(counts))).toBe(sum(counts))
  // The semantic conventions' attributes, as labels.
  expect(before.series.find((one) => one.name === 'db_client_connection_count')?.labels).toMatchObject({
    db_client_connection_pool_name: 'db', db_client_connection_state: expect.stringMatching(/^(idle|used)$/), process_pid: expect.any(String)
  })

  // A stopped process cannot answer, nor change its connections: the server still counts them.
  stopped = workerPids[1]
  process.kill(stopped, 'SIGSTOP')
  const during = await timedScrape(metricsPort)
  expect(during.status).toBe(200)
  // It waited for the stopped worker, and no longer than its bound.
  expect(during.millis).toBeGreaterThanOrEqual(BOUND_MILLIS - CLOCK_SLACK_MILLIS)
  expect(during.millis).toBeLessThan(BOUND_MILLIS + BOUND_SLACK_MILLIS)
  expect(workersOutcome(during.series)).toEqual({ answered: 2, starting: 0, leaving: 0, missing: 1 })
  expect(during.series.filter((one) => one.labels.process_pid === String(stopped))).toEqual([])
  const live = connectionsByPid(during.series)
  expect([...live.keys()].sort()).toEqual(workerPids.filter((pid) => pid !== stopped).sort())
  // The server's count with the stopped worker's connections, read once it holds still.
  const withStopped = sum(live) + (counts.get(stopped) ?? 0)
  expect(await settledProcessList(withStopped)).toBe(withStopped)
  const leftOut = await example.waitFor((line) => line.msg === 'metrics: left out workers that did not answer in time')
  expect(leftOut).toMatchObject({ missing: [stopped], timeoutMillis: BOUND_MILLIS })

  // Running again, it answers the next scrape (its late answer to the last one is ignored).
  process.kill(stopped, 'SIGCONT')
  stopped = undefined
  const after = await scrape(metricsPort)
  expect(workersOutcome(after.series)).toEqual({ answered: 3, starting: 0, leaving: 0, missing: 0 })
  expect([...connectionsByPid(after.series).keys()].sort()).toEqual([...workerPids].sort())

  example.child.kill('SIGTERM')
  expect(await example.exited).toEqual({ code: 0, signal: null })
  expect(await settledProcessList(0)).toBe(0)
})

test('serves /metrics only on its own listener, not on the app\'s port', async () => {
  const metricsPort = await freePort()
  example = await ExampleProcess.start({ MYSQL_URL: fixture.user.url, WORKERS: '1', METRICS_PORT: String(metricsPort) })
  expect((await scrape(metricsPort)).status).toBe(200)
  expect((await scrape(example.port)).status).toBe(404)
})

test('fails to start, forking no worker, when the metrics port is taken', async () => {
  const taken = net.createServer()
  taken.listen(0, '127.0.0.1')
  await once(taken, 'listening')
  try {
    const port = (taken.address() as net.AddressInfo).port
    const child = spawn(process.execPath, [EXAMPLE_ENTRY], {
      env: { ...process.env, MYSQL_URL: fixture.user.url, WORKERS: '1', PORT: String(await freePort()), METRICS_PORT: String(port), LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let output = ''
    child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
    const [code] = await once(child, 'close')
    expect(code).toBe(1)
    const lines = output.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as { msg: string, err?: unknown })
    expect(lines.map((line) => line.msg)).toEqual(['could not start'])
    expect(lines[0].err).toMatchObject({ code: 'EADDRINUSE' })
  } finally {
    await new Promise((resolve) => taken.close(resolve))
  }
})

test('concurrent scrapes all answer, without a listener per scrape on the workers (no MaxListenersExceededWarning)', async () => {
  const metricsPort = await freePort()
  example = await ExampleProcess.start({ MYSQL_URL: fixture.user.url, WORKERS: '2', METRICS_PORT: String(metricsPort) })
  // More than EventEmitter's default of 10 listeners, had each scrape added one per worker.
  const scrapes = await Promise.all(Array.from({ length: 12 }, () => scrape(metricsPort)))
  for (const { status, series } of scrapes) {
    expect(status).toBe(200)
    expect(workersOutcome(series)).toMatchObject({ answered: 2, missing: 0 })
  }
  example.child.kill('SIGTERM')
  expect(await example.exited).toEqual({ code: 0, signal: null })
  expect(example.lines.filter((line) => line.msg.includes('MaxListenersExceededWarning'))).toEqual([])
})

test('logs an error of its listener after listening, every time, instead of letting it end the primary', async () => {
  const logged: Array<{ msg: string, err?: { message?: string } }> = []
  const log = pino({ level: 'info' }, { write: (line: string) => { logged.push(JSON.parse(line) as { msg: string }) } })
  const server = await startMetricsEndpoint({ host: '127.0.0.1', port: 0, timeoutMillis: BOUND_MILLIS }, log)
  try {
    // An emitter with no 'error' listener throws: in the primary, an uncaught exception.
    expect(() => server.emit('error', new Error('first'))).not.toThrow()
    expect(() => server.emit('error', new Error('second'))).not.toThrow()
    expect(logged.filter((line) => line.msg === 'metrics listener error').map((line) => line.err?.message)).toEqual(['first', 'second'])
    // And it still serves: this process has no workers, so none answered and none is missing.
    const { status, series } = await scrape((server.address() as AddressInfo).port)
    expect(status).toBe(200)
    expect(workersOutcome(series)).toMatchObject({ answered: 0, missing: 0 })
  } finally {
    await new Promise((resolve) => server.close(resolve))
  }
})

test('a worker killed during a scrape is not counted answered, and the scrape answers without waiting out the bound', async () => {
  const metricsPort = await freePort()
  example = await ExampleProcess.start({ MYSQL_URL: fixture.user.url, WORKERS: '2', METRICS_PORT: String(metricsPort) })
  const [killed, survivor] = example.logged('worker listening').map((line) => line.workerPid as number)
  // Stopped first, so that it cannot answer before the kill; killed once the scrape is sent.
  process.kill(killed, 'SIGSTOP')
  const during = await timedScrape(metricsPort, () => process.kill(killed, 'SIGKILL'))
  expect(during.status).toBe(200)
  // Its channel closed: nothing to wait for.
  expect(during.millis).toBeLessThan(BOUND_MILLIS)
  expect(workersOutcome(during.series)).toMatchObject({ answered: 1 })
  expect([...connectionsByPid(during.series).keys()]).toEqual([survivor])
  // The primary respawns it; the app keeps serving.
  await example.waitFor((line) => line.msg === 'worker died; respawning' && line.workerPid === killed)
})

test('during a roll, starting and leaving workers are counted as such, never missing, and no scrape waits out the bound', async () => {
  const metricsPort = await freePort()
  example = await ExampleProcess.start({ MYSQL_URL: fixture.user.url, WORKERS: '2', METRICS_PORT: String(metricsPort) })
  example.child.kill('SIGUSR2')
  const rolling = example
  const deadline = performance.now() + ROLL_MILLIS
  const outcomes: Array<Record<string, number>> = []
  while (rolling.logged('rolling restart finished').length === 0) {
    if (performance.now() > deadline) throw new Error(`the roll did not finish within ${ROLL_MILLIS} ms; last lines:\n${rolling.tail()}`)
    const { status, series } = await scrape(metricsPort)
    expect(status).toBe(200)
    outcomes.push(workersOutcome(series))
  }
  // A missing worker is one a scrape waited for in vain.
  expect(outcomes.filter((outcome) => outcome.missing !== 0)).toEqual([])
  // Each replacement loads its code before it can answer: some scrape saw one starting.
  expect(outcomes.some((outcome) => outcome.starting > 0)).toBe(true)
  expect(example.logged('metrics: left out workers that did not answer in time')).toEqual([])
})
