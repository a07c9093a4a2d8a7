import { readdirSync, readFileSync } from 'node:fs'
import { join, relative, sep } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// The plugin relies on parts of knex, tarn and mysql2 they do not document. A release that moves
// one must fail loudly, in one place, naming the versions, never silently drop a guarantee; and
// that one place (lib/driver/, the bottom layer) must stay the only one.

const fixture = perTestUser()
const VERSIONS = /installed: knex \d+\.\d+\.\d+, tarn \d+\.\d+\.\d+, mysql2 \d+\.\d+\.\d+/

let app: FastifyInstance | undefined
afterEach(async () => {
  await app?.close()
  app = undefined
})

type Patch = (require: NodeJS.Require) => void

/** Registers a fresh copy of the plugin (and of knex, tarn, mysql2) after `patch` changed one of them. */
async function readyWith (patch: Patch): Promise<unknown> {
  let plugin: unknown
  jest.isolateModules(() => {
    patch(require)
    plugin = require('../lib')
  })
  app = buildApp().app
  app.register(plugin as never, { connection: fixture.user.url, pool: { min: 1, max: 1 } })
  return app.ready().then(() => undefined, (error: unknown) => error)
}

function shadow (target: object, name: string): void {
  Object.defineProperty(target, name, { value: undefined, configurable: true, writable: true })
}

test('registration fails with FST_FORK_SAFE_DB_UNSUPPORTED_VERSION when knex\'s client lost a method, naming the versions', async () => {
  const error = await readyWith((load) => shadow(load('knex')({ client: 'mysql2' }).client.constructor.prototype, 'cancelQuery'))
  expect(error).toMatchObject({ code: 'FST_FORK_SAFE_DB_UNSUPPORTED_VERSION', message: expect.stringMatching(/knex's mysql2 client\.cancelQuery\(\) is missing/) })
  expect((error as Error).message).toMatch(VERSIONS)
  expect(await fixture.database.countConnections(fixture.user.user)).toBe(0)
})

test('ready() fails with FST_FORK_SAFE_DB_UNSUPPORTED_VERSION when tarn\'s pool changed shape', async () => {
  const error = await readyWith((load) => shadow(load(require.resolve('tarn', { paths: [require.resolve('knex')] })).Pool.prototype, 'numPendingCreates'))
  expect(error).toMatchObject({ code: 'FST_FORK_SAFE_DB_UNSUPPORTED_VERSION', message: expect.stringMatching(/tarn's pool\.numPendingCreates\(\)/) })
  expect((error as Error).message).toMatch(VERSIONS)
})

test('ready() fails, leaving no connection open, when mysql2\'s connection changed shape', async () => {
  // knex loads mysql2 when it builds its client, after the isolated load: patch the shared copy.
  const prototype = require('mysql2').Connection.prototype
  shadow(prototype, 'ping')
  let error: unknown
  try {
    error = await readyWith(() => {})
  } finally {
    delete prototype.ping
  }
  expect(error).toMatchObject({ code: 'FST_FORK_SAFE_DB_WARMUP_FAILED', cause: expect.objectContaining({ code: 'FST_FORK_SAFE_DB_UNSUPPORTED_VERSION' }) })
  expect(((error as Error).cause as Error).message).toMatch(/mysql2's connection\.ping\(\)/)
  expect(await fixture.database.settledCount(fixture.user.user, 0)).toBe(0)
})

// What no module outside lib/driver/ may name: knex's marks on connections, mysql2's private
// flags and socket, tarn's lists, queue, counters and inner steps, knex's compiled-query timeout
// fields and the fields it copies onto errors, a transaction client's mark, knex's own files, and
// the console (mysql2's warning line is swallowed there, and nothing else may touch it).
// (`settings.stream` is mysql2's public option; `.stream` elsewhere is a connection's socket.)
const PRIVATE_PARTS = [
  /__knex/, /_fatalError|_protocolError|_closing/, /knex\/lib\//, /tarn\/dist\//, /\.(used|free)\b/, /(?<!settings)\.stream\b/, /cancelOnTimeout|\._timeout\b/,
  /\.pendingAcquires\b|\.eventId\b|\._executeEventHandlers|\._tryAcquireOrCreate|\._startReaping|\._destroy\b/,
  /\.transacting\b|connectionConfigExpirationChecker/, /\.bindings\b.*delete|delete .*\.bindings\b/, /\bconsole\./,
  /trx\.client\b/, /KnexTimeoutError\b/
]

function sources (directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name)
    return entry.isDirectory() ? sources(path) : path.endsWith('.ts') ? [path] : []
  })
}

test('no module outside lib/driver/ names a private part of knex, tarn or mysql2', () => {
  const lib = join(__dirname, '..', 'lib')
  const offenders: string[] = []
  for (const file of sources(lib)) {
    if (relative(lib, file).startsWith(`driver${sep}`)) continue
    // knex's public error class is the base of the plugin's two timeouts.
    const parts = relative(lib, file) === 'errors.ts' ? PRIVATE_PARTS.filter((part) => !part.test('KnexTimeoutError')) : PRIVATE_PARTS
    readFileSync(file, 'utf8').split('\n').forEach((line, index) => {
      const code = /^\s*(\*|\/\*)/.test(line) ? '' : line.replace(/\/\/.*$/, '')
      if (parts.some((part) => part.test(code))) offenders.push(`${relative(lib, file)}:${index + 1}: ${line.trim()}`)
    })
  }
  expect(offenders).toEqual([])
})
