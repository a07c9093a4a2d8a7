import { Agent, request, type IncomingHttpHeaders } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import forkSafeWorker, { type ForkSafeWorkerOptions } from '../lib/worker'
import { FST_FORK_SAFE_DB_INVALID_OPTION } from '../lib/errors'

// The retire helper's bounds, in one process (outside a cluster): real sockets, real clients.

let app: FastifyInstance | undefined
let agent: Agent | undefined
let raw: Socket | undefined

afterEach(async () => {
  agent?.destroy()
  agent = undefined
  raw?.destroy()
  raw = undefined
  await app?.close()
  app = undefined
})

async function start (options: ForkSafeWorkerOptions, routes: (app: FastifyInstance) => void = () => {}): Promise<{ app: FastifyInstance, port: number }> {
  const instance = Fastify()
  await instance.register(forkSafeWorker, { signals: [], ...options })
  routes(instance)
  await instance.listen({ port: 0, host: '127.0.0.1' })
  app = instance
  return { app: instance, port: (instance.server.address() as AddressInfo).port }
}

interface Answer { status: number, headers: IncomingHttpHeaders, body: string }

function get (port: number, path: string, via: Agent | false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, agent: via }, (response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => { body += chunk.toString() })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body }))
    }).on('error', reject).end()
  })
}

test('closes a kept-alive connection that its client never closes once drainMillis has passed', async () => {
  const { app, port } = await start({ drainMillis: 300, closeMillis: 5000 }, (instance) => instance.get('/', async () => 'ok'))
  agent = new Agent({ keepAlive: true, maxSockets: 1 })
  expect((await get(port, '/', agent)).headers.connection).toBe('keep-alive')
  const [socket] = Object.values(agent.freeSockets).flat()
  if (socket === undefined) throw new Error('the agent kept no socket')
  const closedByServer = new Promise((resolve) => socket.once('close', resolve))

  const started = performance.now()
  const report = await app.retire('test')
  const millis = performance.now() - started
  await closedByServer
  expect(report).toMatchObject({ reason: 'test', openAtStart: 1, openAfterDrain: 1, closedUnused: 0, destroyed: 0, closeTimedOut: false, disconnection: 'not-a-cluster-worker' })
  expect(millis).toBeGreaterThanOrEqual(290)
  expect(millis).toBeLessThan(5000)
})

/** A client that connects ahead of its request (a browser's preconnect, a proxy's pool), once the server has accepted it. */
async function connectSilently (instance: FastifyInstance, port: number): Promise<Socket> {
  const accepted = new Promise((resolve) => instance.server.once('connection', resolve))
  raw = connect(port, '127.0.0.1')
  await accepted
  return raw
}

test('closes a connection on which its client has sent nothing once drainMillis has passed, without waiting for closeMillis', async () => {
  const { app, port } = await start({ drainMillis: 200, closeMillis: 3000 })
  const silent = await connectSilently(app, port)
  const closedByServer = new Promise((resolve) => silent.once('close', resolve))

  const report = await app.retire('test')
  await closedByServer
  expect(report).toMatchObject({ openAtStart: 1, openAfterDrain: 1, closedUnused: 1, destroyed: 0, closeTimedOut: false })
  expect(report.millis).toBeLessThan(3000)
})

test('serves a request that arrives during the drain on a connection accepted before the worker stopped accepting', async () => {
  const { app, port } = await start({ drainMillis: 5000, closeMillis: 5000 }, (instance) => instance.get('/', async () => 'ok'))
  const silent = await connectSilently(app, port)
  let answer = ''
  silent.on('data', (chunk: Buffer) => { answer += chunk.toString() })
  const ended = new Promise((resolve) => silent.once('end', resolve))

  const retired = app.retire('test')
  silent.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
  await ended
  expect(answer).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
  expect(answer.toLowerCase()).toContain('connection: close')
  expect(await retired).toMatchObject({ openAtStart: 1, openAfterDrain: 0, closedUnused: 0, destroyed: 0 })
})

test('tells a client whose request is in flight when retiring to close its connection, and finishes when it does', async () => {
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  let arrived: () => void = () => {}
  const inFlight = new Promise<void>((resolve) => { arrived = resolve })
  const { app, port } = await start({ drainMillis: 10_000, closeMillis: 10_000 }, (instance) => instance.get('/slow', async () => {
    arrived()
    await held
    return 'done'
  }))
  agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const answer = get(port, '/slow', agent)
  await inFlight
  const retired = app.retire('test')
  release()
  expect(await answer).toMatchObject({ status: 200, body: 'done', headers: { connection: 'close' } })
  // Well before drainMillis: the client hung up after its answer.
  expect(await retired).toMatchObject({ openAtStart: 1, openAfterDrain: 0, destroyed: 0, closeTimedOut: false })
  expect((await retired).millis).toBeLessThan(5000)
})

test('destroys the connection of a request that never ends once closeMillis has passed, then closes Fastify', async () => {
  let arrived: () => void = () => {}
  const inFlight = new Promise<void>((resolve) => { arrived = resolve })
  let onCloseRan = false
  const { app, port } = await start({ drainMillis: 200, closeMillis: 500 }, (instance) => {
    instance.get('/never', () => { arrived() })
    instance.addHook('onClose', async () => { onCloseRan = true })
  })
  const answer = get(port, '/never', false).then(() => 'answered', (error: NodeJS.ErrnoException) => error.code)
  await inFlight

  const started = performance.now()
  const report = await app.retire('test')
  const millis = performance.now() - started
  expect(report).toMatchObject({ openAtStart: 1, destroyed: 1, closeTimedOut: false })
  expect(onCloseRan).toBe(true)
  expect(await answer).toBe('ECONNRESET')
  // drainMillis (the request is not idle, so it is not closed then), then closeMillis.
  expect(millis).toBeGreaterThanOrEqual(690)
  expect(millis).toBeLessThan(5000)
})

test('finishes the retire when an onClose hook fails', async () => {
  const { app } = await start({ drainMillis: 100 }, (instance) => {
    instance.addHook('onClose', async () => { throw new Error('hook failed') })
  })
  expect(await app.retire('test')).toMatchObject({ closeTimedOut: false, disconnection: 'not-a-cluster-worker' })
})

test('returns the same retire to every caller', async () => {
  const { app } = await start({ drainMillis: 100 })
  const first = app.retire('first')
  expect(app.retire('second')).toBe(first)
  expect((await first).reason).toBe('first')
})

test('sends the warm-up requests over a private listener before listen() resolves, marked isWarmup', async () => {
  const seen: Array<{ url: string, method: string, warmup: boolean, body: unknown }> = []
  const instance = Fastify()
  await instance.register(forkSafeWorker, {
    signals: [],
    warmup: { requests: [{ url: '/items/1' }, { method: 'POST', url: '/items', body: { name: 'x' } }], rounds: 3 }
  })
  instance.get('/items/:id', async (request) => { seen.push({ url: request.url, method: 'GET', warmup: request.isWarmup, body: undefined }); return {} })
  instance.post('/items', async (request) => { seen.push({ url: request.url, method: 'POST', warmup: request.isWarmup, body: request.body }); return {} })
  app = instance
  await instance.listen({ port: 0, host: '127.0.0.1' })
  expect(seen).toHaveLength(6)
  expect(seen.every((request) => request.warmup)).toBe(true)
  expect(seen.filter((request) => request.method === 'POST').map((request) => request.body)).toEqual([{ name: 'x' }, { name: 'x' }, { name: 'x' }])

  await get((instance.server.address() as AddressInfo).port, '/items/2', false)
  expect(seen[6]).toMatchObject({ url: '/items/2', warmup: false })
})

test('rejects an invalid option at registration with a coded error that names it', async () => {
  const instance = Fastify()
  instance.register(forkSafeWorker, { drainMillis: -1 })
  const error = await instance.ready().then(() => undefined, (error: unknown) => error)
  await instance.close()
  expect(error).toBeInstanceOf(FST_FORK_SAFE_DB_INVALID_OPTION)
  expect((error as Error).message).toBe('fastify-fork-safe-db: worker option drainMillis must be an integer from 0 to 2147483647, got `-1` (number)')
})

test('outside a worker of fastify-fork-safe-db/cluster it listens for no IPC message', async () => {
  const listeners = process.listenerCount('message')
  await start({})
  expect(process.listenerCount('message')).toBe(listeners)
})
