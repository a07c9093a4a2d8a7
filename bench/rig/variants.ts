import Fastify, { type FastifyInstance } from 'fastify'
import knex from 'knex'
import { createPool } from 'mysql2/promise'
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics'
import forkSafeDb, { type ForkSafeDbOptions } from 'fastify-fork-safe-db'
import { userPath } from './database'

// The apps the per-request benchmarks (hot-path, instructions, overhead) compare, defined here
// once: the same one-row lookup through the plugin with every default, through bare knex, through
// a raw mysql2 pool, through the plugin with one default (or all of them) turned off, and a route
// that answers a constant (the HTTP ceiling). Each has its own pool of 10. Every variant is made
// through public API only: an ablation that could only be made by patching the shipped code is
// not one of them (bench/README.md says which).

export const POOL = { min: 10, max: 10 }
const SQL = 'SELECT id, name, email FROM users WHERE id = ? LIMIT 1'

export interface Variant {
  key: string
  name: string
  app: FastifyInstance
  close?: () => Promise<void>
}

type Params = { Params: { id: string } }
type Built = Omit<Variant, 'key' | 'name'>

const lookup = (db: knex.Knex, id: string) =>
  db('users').select('id', 'name', 'email').where({ id: Number(id) }).first()
const NO_CHECK = { checkAfterIdleMillis: Number.MAX_SAFE_INTEGER, pingAfterIdleMillis: Number.MAX_SAFE_INTEGER }

async function pluginApp (url: string, options: Partial<ForkSafeDbOptions>, scoped: boolean): Promise<Built> {
  const app = Fastify()
  await app.register(forkSafeDb, { connection: url, pool: POOL, ...options })
  app.get<Params>('/users/:id', async (request) => lookup(scoped ? request.db : app.db, request.params.id))
  return { app }
}

function knexApp (url: string, hooked: boolean): Built {
  const db = knex({ client: 'mysql2', connection: url, pool: POOL })
  const app = Fastify()
  if (hooked) app.addHook('onResponse', (_request, _reply, done) => { done() })
  app.get<Params>('/users/:id', async (request) => lookup(db, request.params.id))
  return { app, close: () => db.destroy() }
}

function mysql2App (url: string): Built {
  const pool = createPool({ uri: url, connectionLimit: POOL.max })
  const app = Fastify()
  app.get<Params>('/users/:id', async (request) => {
    const [rows] = await pool.query(SQL, [Number(request.params.id)])
    return (rows as unknown[])[0]
  })
  return { app, close: () => pool.end() }
}

function constantApp (): Built {
  const app = Fastify()
  app.get('/users/:id', async () => ({ id: 42, name: 'User 42', email: 'user42@example.com' }))
  return { app }
}

// An OpenTelemetry SDK that aggregates what it is given and exports nothing: what an app with a
// Prometheus or OTLP reader pays per request, without the export's own work.
class PullOnlyReader extends MetricReader {
  protected override async onForceFlush (): Promise<void> {}
  protected override async onShutdown (): Promise<void> {}
}

async function meteredApp (url: string): Promise<Built> {
  const provider = new MeterProvider({ readers: [new PullOnlyReader()] })
  const built = await pluginApp(url, { metrics: provider }, true)
  return { ...built, close: () => provider.shutdown() }
}

const VARIANTS: Record<string, { name: string, build: (url: string) => Built | Promise<Built> }> = {
  plugin: { name: 'plugin, every default (request.db)', build: (url) => pluginApp(url, {}, true) },
  knex: { name: 'bare knex in a closure', build: (url) => knexApp(url, false) },
  'knex-hooked': {
    name: 'bare knex, plus a no-op onResponse hook (what Fastify charges for one)',
    build: (url) => knexApp(url, true)
  },
  mysql2: { name: 'raw mysql2 pool (@fastify/mysql\'s path)', build: mysql2App },
  constant: { name: 'a constant route, no database (the HTTP ceiling)', build: constantApp },
  // What lending a free connection directly saves: a pool.validate of the user's (here a no-op)
  // sends every borrow through tarn's queue, as every borrow went before.
  queued: {
    name: 'plugin, every default, borrowing through tarn\'s queue (a no-op pool.validate)',
    build: (url) => pluginApp(url, { pool: { ...POOL, validate: () => true } }, true)
  },
  'no-scope': { name: 'plugin, fastify.db (no request scope)', build: (url) => pluginApp(url, {}, false) },
  'no-timeout': {
    name: 'plugin, queryTimeoutMillis: 0',
    build: (url) => pluginApp(url, { queryTimeoutMillis: 0 }, true)
  },
  'no-check': { name: 'plugin, no borrow check', build: (url) => pluginApp(url, NO_CHECK, true) },
  // What an operator turns on (issue 21): each costs nothing until used, or states its cost.
  'metrics-noop': { name: 'plugin, metrics: true with no OpenTelemetry SDK (the API\'s no-op meter)', build: (url) => pluginApp(url, { metrics: true }, true) },
  'metrics-sdk': { name: 'plugin, metrics into an OpenTelemetry SDK MeterProvider', build: meteredApp },
  'leak-detection': { name: 'plugin, leakDetectionThresholdMillis: 10000 (a stack per builder, raw or transaction made)', build: (url) => pluginApp(url, { leakDetectionThresholdMillis: 10_000 }, true) },
  'slow-query': { name: 'plugin, slowQueryMillis: 1000', build: (url) => pluginApp(url, { slowQueryMillis: 1000 }, true) },
  none: {
    name: 'plugin, all of these off',
    build: (url) => pluginApp(url, { queryTimeoutMillis: 0, ...NO_CHECK }, false)
  }
}

export const VARIANT_KEYS = Object.keys(VARIANTS)

/** BENCH_VARIANTS (comma-separated keys) if set, else `fallback`; unknown keys fail at once. */
export function chosenVariants (fallback: readonly string[]): string[] {
  const keys = process.env.BENCH_VARIANTS?.split(',') ?? [...fallback]
  const unknown = keys.filter((key) => !(key in VARIANTS))
  if (unknown.length > 0) {
    throw new Error(`no variant ${unknown.join(', ')}; expected some of ${VARIANT_KEYS.join(', ')}`)
  }
  return keys
}

export async function buildVariant (key: string, url: string): Promise<Variant> {
  const variant = VARIANTS[key]
  if (variant === undefined) throw new Error(`no variant ${key}; expected one of ${VARIANT_KEYS.join(', ')}`)
  const built = await variant.build(url)
  await built.app.ready()
  return { key, name: variant.name, ...built }
}

export async function closeVariant (variant: Variant): Promise<void> {
  await variant.app.close()
  await variant.close?.()
}

/** The ablation rows: what each default costs is the plugin's cost minus the variant's. */
export const ABLATIONS: Array<[what: string, key: string]> = [
  ['request scope (request.db: Proxy, statement ownership, hang-up watch)', 'no-scope'],
  ['default query timeout (a timer and a promise per statement)', 'no-timeout'],
  ['borrow check (socket check, one event-loop turn per borrow)', 'no-check'],
  ['all of the above', 'none'],
  ['lending free connections through tarn\'s queue instead of directly', 'queued']
]

/** Sends `requests` lookups through `variant.app.inject()`, `concurrency` at a time; each latency (ms). */
export async function drive (variant: Variant, requests: number, concurrency: number): Promise<number[]> {
  const latencies: number[] = []
  let next = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < requests) {
      next += 1
      const sent = performance.now()
      const response = await variant.app.inject({ method: 'GET', url: userPath(next) })
      if (response.statusCode !== 200) throw new Error(`${variant.key}: ${response.statusCode} ${response.body}`)
      latencies.push(performance.now() - sent)
    }
  }))
  return latencies
}
