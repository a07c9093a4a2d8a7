import { createServer, type Server, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, { type FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { watchTimers } from './helpers/timers'

// A host that accepts TCP and never answers (a hung server, a black-holing middlebox): warm-up
// must give up on its own, within Fastify's pluginTimeout, with the plugin's coded error and not
// Fastify's FST_ERR_HOOK_TIMEOUT; the sockets it was opening are closed, and once close() has
// resolved nothing of the plugin's runs or logs.

/** A local server that accepts every connection and never writes a byte. */
class SilentHost {
  readonly #server: Server
  readonly #sockets = new Set<Socket>()
  accepted = 0

  private constructor (server: Server) {
    this.#server = server
    server.on('connection', (socket) => {
      this.accepted += 1
      this.#sockets.add(socket)
      socket.on('error', () => {})
      socket.once('close', () => this.#sockets.delete(socket))
    })
  }

  static async start (): Promise<SilentHost> {
    const server = createServer()
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    return new SilentHost(server)
  }

  get url (): string {
    const address = this.#server.address()
    if (address === null || typeof address === 'string') throw new Error('not listening')
    return `mysql://nobody:secret@127.0.0.1:${address.port}/test`
  }

  /** Accepted connections still open (their peer has not closed them). */
  get open (): number {
    return this.#sockets.size
  }

  /** Resolves once every accepted connection has closed. */
  async allClosed (): Promise<void> {
    await Promise.all([...this.#sockets].map(async (socket) => new Promise((resolve) => socket.once('close', resolve))))
  }

  async close (): Promise<void> {
    for (const socket of this.#sockets) socket.destroy()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }
}

let host: SilentHost
let app: FastifyInstance | undefined
const lines: string[] = []

function build (pluginTimeout?: number): FastifyInstance {
  app = Fastify({
    ...(pluginTimeout === undefined ? {} : { pluginTimeout }),
    logger: { level: 'trace', stream: { write: (line: string) => { lines.push(line) } } }
  })
  return app
}

beforeEach(async () => {
  lines.length = 0
  host = await SilentHost.start()
})
afterEach(async () => {
  await app?.close()
  app = undefined
  await host.close()
})

test('rejects ready() with FST_FORK_SAFE_DB_WARMUP_FAILED before Fastify\'s default pluginTimeout, saying how long it waited', async () => {
  const instance = build()
  expect(instance.initialConfig.pluginTimeout).toBe(10_000)
  await instance.register(forkSafeDb, { connection: host.url })
  const started = performance.now()
  const error = await instance.ready().then(() => undefined, (error: unknown) => error)
  expect(performance.now() - started).toBeLessThan(10_000)
  expect(error).toMatchObject({
    code: 'FST_FORK_SAFE_DB_WARMUP_FAILED',
    message: expect.stringContaining('no connection was opened within pool.acquireTimeoutMillis (5000 ms)')
  })
  // The connects it was opening were closed, not left to mysql2's connectTimeout (10 s).
  expect(host.accepted).toBeGreaterThan(0)
  await host.allClosed()
  expect(host.open).toBe(0)
}, 20_000)

test('gives up on warm-up a margin before a pluginTimeout shorter than the acquire timeout, saying how long it waited', async () => {
  const instance = build(2000)
  await instance.register(forkSafeDb, { connection: host.url })
  const error = await instance.ready().then(() => undefined, (error: unknown) => error)
  // The plugin's own error, not Fastify's FST_ERR_PLUGIN_TIMEOUT: it gave up first. (No clock is
  // read here: under load the whole ready() may take longer than the timeout it beat.)
  expect(error).toMatchObject({
    code: 'FST_FORK_SAFE_DB_WARMUP_FAILED',
    message: expect.stringContaining('warm-up gave up after 1500 ms without an answer from the database, before Fastify\'s pluginTimeout (2000 ms)'),
    cause: expect.objectContaining({ code: 'ETIMEDOUT' })
  })
  await host.allClosed()
  expect(host.open).toBe(0)
})

test('after close() following a warm-up that gave up, logs nothing and leaves no timer behind', async () => {
  const timers = watchTimers()
  const instance = build(1000)
  // Warm-up gives up at the acquire timeout, before Fastify's pluginTimeout; mysql2's own connect
  // timeout would fire after both, and after close().
  const connectTimeout = 1500
  await instance.register(forkSafeDb, { connection: { ...connectionOf(host.url), connectTimeout }, pool: { acquireTimeoutMillis: 300 } })
  const started = performance.now()
  await expect(instance.ready()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_WARMUP_FAILED', message: expect.stringContaining('within pool.acquireTimeoutMillis (300 ms)') })
  await instance.close()
  app = undefined
  const linesAtClose = lines.length
  const alive = await timers.alive()
  timers.stop()
  expect(alive).toEqual([])
  // Silence is asserted over the time in which mysql2's connect timeout would have fired.
  await sleep(connectTimeout + 200 - (performance.now() - started))
  expect(lines.slice(linesAtClose)).toEqual([])
})

function connectionOf (url: string): { host: string, port: number, user: string, password: string, database: string } {
  const parsed = new URL(url)
  return { host: parsed.hostname, port: Number(parsed.port), user: parsed.username, password: parsed.password, database: parsed.pathname.slice(1) }
}
