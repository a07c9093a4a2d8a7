import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { perTestUser } from './helpers/database'

// The OpenTelemetry way for pm2 and containers (docs/cluster-metrics.md): each process exports
// OTLP itself, with its pid in its resource, and whatever receives them (a collector) tells the
// processes apart. Here the receiver is a node:http server shaped like a collector's OTLP/HTTP
// endpoint (POST /v1/metrics, JSON), and the processes are two forks of a fixture, each with a
// database user of its own so that the server's process list tells their connections apart.

const FIXTURE = join(__dirname, 'fixtures', 'otlp-process.js')
const fixture = perTestUser()

interface AnyValue { stringValue?: string, intValue?: number | string, doubleValue?: number, boolValue?: boolean }
interface KeyValue { key: string, value: AnyValue }
interface NumberPoint { attributes?: KeyValue[], asInt?: number | string, asDouble?: number }
interface OtlpMetric { name: string, unit: string, sum?: { dataPoints: NumberPoint[] }, gauge?: { dataPoints: NumberPoint[] }, histogram?: { dataPoints: Array<{ attributes?: KeyValue[], count: number | string }> } }
interface ExportRequest { resourceMetrics: Array<{ resource: { attributes: KeyValue[] }, scopeMetrics: Array<{ metrics: OtlpMetric[] }> }> }

/** One resource's metrics from one export, with its attributes as a plain object. */
interface Received { resource: Record<string, unknown>, metrics: OtlpMetric[] }

const plain = (attributes: KeyValue[] = []) => Object.fromEntries(attributes.map(({ key, value }) => [key, value.stringValue ?? value.boolValue ?? value.doubleValue ?? (value.intValue === undefined ? undefined : Number(value.intValue))]))

class Receiver {
  readonly received: Received[] = []
  readonly contentTypes = new Set<string>()
  /**
   * Runs on each resource's metrics before the export is answered: the exporting process waits
   * for the answer, so what this observes happened before the export was sent.
   */
  inspect: (received: Received) => Promise<void> = async () => {}
  readonly #server = http.createServer((request, response) => {
    let body = ''
    request.setEncoding('utf8').on('data', (chunk: string) => { body += chunk })
    request.on('end', () => {
      if (request.method !== 'POST' || request.url !== '/v1/metrics') {
        response.writeHead(404).end()
        return
      }
      this.contentTypes.add(String(request.headers['content-type']))
      const received = (JSON.parse(body) as ExportRequest).resourceMetrics.map(({ resource, scopeMetrics }) =>
        ({ resource: plain(resource.attributes), metrics: scopeMetrics.flatMap((scope) => scope.metrics) }))
      this.received.push(...received)
      Promise.all(received.map((one) => this.inspect(one))).finally(() => {
        // A collector's answer to a full success.
        response.writeHead(200, { 'content-type': 'application/json' }).end('{}')
      })
    })
  })

  async listen (): Promise<string> {
    this.#server.listen(0, '127.0.0.1')
    await once(this.#server, 'listening')
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/v1/metrics`
  }

  from (pid: number): Received[] {
    return this.received.filter((one) => one.resource['process.pid'] === pid)
  }

  close (): Promise<void> {
    this.#server.closeAllConnections()
    return new Promise((resolve) => this.#server.close(() => resolve()))
  }
}

let receiver: Receiver | undefined
const children: ChildProcess[] = []

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await once(child, 'exit')
    }
  }
  await receiver?.close()
  receiver = undefined
})

async function start (url: string, mysqlUrl: string): Promise<ChildProcess> {
  const child = fork(FIXTURE, { env: { ...process.env, MYSQL_URL: mysqlUrl, OTLP_URL: url }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  children.push(child)
  await said(child, 'ready')
  return child
}

/** Resolves once the child sends `word`; rejects if it exits first. */
function said (child: ChildProcess, word: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: unknown) => { if (message === word) finish(resolve) }
    const onExit = (code: number | null) => finish(() => reject(new Error(`the fixture exited (${code}) before saying ${word}`)))
    const finish = (settle: () => void) => {
      child.off('message', onMessage)
      child.off('exit', onExit)
      settle()
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

/** The sum of a number metric's points in an export, or undefined if the export lacks it. */
function total (received: Received, name: string): number | undefined {
  const metric = received.metrics.find((one) => one.name === name)
  const points = metric?.sum?.dataPoints ?? metric?.gauge?.dataPoints
  return points?.reduce((sum, point) => sum + Number(point.asInt ?? point.asDouble), 0)
}

test('two processes export their pool metrics over OTLP, told apart by process.pid, and export once more after their pools have closed', async () => {
  receiver = new Receiver()
  const url = await receiver.listen()
  const users = [fixture.user, await fixture.database.createUser()]
  const processes = await Promise.all(users.map((user) => start(url, user.url)))
  const pids = processes.map((child) => child.pid as number)

  await Promise.all(processes.map(async (child) => {
    const flushed = said(child, 'flushed')
    child.send('flush')
    await flushed
  }))
  expect([...receiver.contentTypes]).toEqual(['application/json'])
  const latest = pids.map((pid) => receiver!.from(pid).at(-1))
  for (const [index, received] of latest.entries()) {
    expect(received?.resource).toMatchObject({ 'process.pid': pids[index], 'service.instance.id': expect.any(String) })
    const names = received?.metrics.map((metric) => metric.name) ?? []
    expect(names).toEqual(expect.arrayContaining(['db.client.connection.count', 'db.client.connection.max', 'db.client.operation.duration']))
    const count = received?.metrics.find((metric) => metric.name === 'db.client.connection.count')
    expect(count?.unit).toBe('{connection}')
    expect(plain(count?.sum?.dataPoints[0].attributes)).toMatchObject({ 'db.client.connection.pool.name': 'db', 'db.system.name': 'mariadb' })
  }
  // Each process's count is the server's for its user: the pools are idle and warm.
  for (const [index, received] of latest.entries()) {
    const exported = total(received!, 'db.client.connection.count')
    expect(exported).toBeGreaterThan(0)
    expect(exported).toBe(await fixture.database.countConnections(users[index].user))
  }

  // While each export of a stopping process waits for its answer, the server's count of that
  // process's connections: 0 once its pool has closed. Had the provider been shut down before
  // the pool closed (an onClose hook added after the plugin), the count would stay put.
  const connectionsAtFinalExport = new Map<number, number>()
  receiver.inspect = async (received) => {
    const index = pids.indexOf(received.resource['process.pid'] as number)
    connectionsAtFinalExport.set(pids[index], await fixture.database.settledCount(users[index].user, 0))
  }
  const before = pids.map((pid) => receiver!.from(pid).length)
  await Promise.all(processes.map(async (child) => {
    const exited = once(child, 'exit')
    child.send('stop')
    expect(await exited).toEqual([0, null])
  }))
  // provider.shutdown() flushed one last export from each, after its pool closed.
  expect(pids.map((pid) => receiver!.from(pid).length)).toEqual(before.map((count) => count + 1))
  expect(pids.map((pid) => connectionsAtFinalExport.get(pid))).toEqual([0, 0])
})
