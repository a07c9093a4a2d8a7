import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { Knex } from 'knex'
import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// The end of a request's response, as the request scope sees it: only a request that begins a
// transaction listens for it (the leak check), and once it has come, the request is over: a
// hang-up cancels nothing of what the handler left running.

const fixture = perTestUser({ ownDatabase: true })
const LEAK_MESSAGE = 'a transaction begun through request.db was neither committed nor rolled back when the response ended; rolling it back'
const HANG_UP_MESSAGE = 'client disconnected mid-request: cancelled its running queries'

let logged: LoggedApp
let app: FastifyInstance

beforeEach(() => {
  logged = buildApp()
  app = logged.app
})
afterEach(async () => { await app.close() })

/** Resolves once no connection is borrowed; fails after two seconds. */
async function connectionReturned (): Promise<void> {
  const pool = app.db.client.pool
  const deadline = performance.now() + 2000
  while (pool.numUsed() > 0) {
    if (performance.now() > deadline) throw new Error(`${pool.numUsed() as number} connection(s) still borrowed`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

test('a transaction begun in an onRequest hook that runs before the plugin\'s, and leaked, is rolled back when the response ends', async () => {
  app.addHook('onRequest', async (request) => {
    if (request.url !== '/early') return
    const trx: Knex.Transaction = await request.db.transaction()
    await trx.raw('SELECT 1')
  })
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 1 } })
  app.get('/early', async () => 'answered')
  const response = await app.inject('/early')
  expect(response.body).toBe('answered')
  await connectionReturned()
  expect(logged.lines().filter((line) => line.msg === LEAK_MESSAGE)).toHaveLength(1)
})

test('a statement the handler leaves running after its response is not cancelled when the client then hangs up', async () => {
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 1 } })
  let background: Promise<unknown> | undefined
  app.get('/background', async (request) => {
    background = request.db.raw('SELECT SLEEP(0.5) AS background_statement').then(([rows]) => rows[0].background_statement as number)
    return 'answered'
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const { port } = app.server.address() as AddressInfo
  // agent: false sends Connection: close; the server closes the socket after the response.
  const closed = await new Promise<boolean>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/background', agent: false }, (response) => {
      response.resume()
      response.once('close', () => resolve(response.complete))
    }).once('error', reject)
  })
  expect(closed).toBe(true)
  // SLEEP returns 1 when a KILL QUERY interrupts it, 0 when it ran to its end.
  expect(await background).toBe(0)
  expect(logged.lines().some((line) => line.msg === HANG_UP_MESSAGE)).toBe(false)
})

test('a request that begins no transaction adds no listener to its response', async () => {
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 1 } })
  const listeners = (raw: NodeJS.EventEmitter) => raw.listenerCount('finish') + raw.listenerCount('close')
  app.get('/none', async (_request, reply) => listeners(reply.raw))
  app.get('/query', async (request, reply) => {
    await request.db.raw('SELECT 1')
    return listeners(reply.raw)
  })
  app.get('/transaction', async (request, reply) => {
    await request.db.transaction(async (trx) => trx.raw('SELECT 1'))
    return listeners(reply.raw)
  })
  const none = (await app.inject('/none')).json<number>()
  expect((await app.inject('/query')).json()).toBe(none)
  expect((await app.inject('/transaction')).json()).toBe(none + 1)
})
