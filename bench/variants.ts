import { dirname, join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import knex from 'knex'
import { createPool } from 'mysql2/promise'
import forkSafeDb, { type ForkSafeDbOptions } from 'fastify-fork-safe-db'

// The apps the per-request cost benchmarks compare: the same one-row lookup through the plugin
// with every default, through bare knex, through a raw mysql2 pool, and through the plugin with
// one default (or all of them) turned off. Each has its own pool of 10.

export const POOL = { min: 10, max: 10 }
const SQL = 'SELECT id, name, email FROM users WHERE id = ? LIMIT 1'

export interface Variant {
  key: string
  name: string
  app: FastifyInstance
  /** Applied just before this variant is measured and undone just after (patches of the shipped code). */
  around?: { on: () => void, off: () => void }
  close?: () => Promise<void>
}

// The shipped plugin's module, for the one ablation that has no option (loaded when that variant
// is built, so the other variants also run against older builds of the plugin).
function withoutAcquireStats (): { on: () => void, off: () => void } {
  const dist = dirname(require.resolve('fastify-fork-safe-db'))
  const { PoolCounters } = require(join(dist, 'pool', 'stats.js')) as { PoolCounters: { prototype: { recordAcquire: (...args: unknown[]) => void } } }
  const original = PoolCounters.prototype.recordAcquire
  return { on: () => { PoolCounters.prototype.recordAcquire = () => {} }, off: () => { PoolCounters.prototype.recordAcquire = original } }
}

const lookup = (db: knex.Knex, id: string) => db('users').select('id', 'name', 'email').where({ id: Number(id) }).first()
const NO_CHECK = { checkAfterIdleMillis: Number.MAX_SAFE_INTEGER, pingAfterIdleMillis: Number.MAX_SAFE_INTEGER }

async function pluginApp (url: string, options: Partial<ForkSafeDbOptions>, scoped: boolean): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(forkSafeDb, { connection: url, pool: POOL, ...options })
  app.get<{ Params: { id: string } }>('/users/:id', async (request) => lookup(scoped ? request.db : app.db, request.params.id))
  return app
}

const BUILDERS: Record<string, { name: string, build: (url: string) => Promise<Omit<Variant, 'key' | 'name'>> }> = {
  plugin: { name: 'plugin, every default (request.db)', build: async (url) => ({ app: await pluginApp(url, {}, true) }) },
  knex: {
    name: 'bare knex in a closure',
    build: async (url) => {
      const db = knex({ client: 'mysql2', connection: url, pool: POOL })
      const app = Fastify()
      app.get<{ Params: { id: string } }>('/users/:id', async (request) => lookup(db, request.params.id))
      return { app, close: () => db.destroy() }
    }
  },
  'knex-hooked': {
    name: 'bare knex, plus a no-op onResponse hook (what Fastify charges for one)',
    build: async (url) => {
      const db = knex({ client: 'mysql2', connection: url, pool: POOL })
      const app = Fastify()
      app.addHook('onResponse', (_request, _reply, done) => { done() })
      app.get<{ Params: { id: string } }>('/users/:id', async (request) => lookup(db, request.params.id))
      return { app, close: () => db.destroy() }
    }
  },
  mysql2: {
    name: 'raw mysql2 pool (@fastify/mysql\'s path)',
    build: async (url) => {
      const pool = createPool({ uri: url, connectionLimit: POOL.max })
      const app = Fastify()
      app.get<{ Params: { id: string } }>('/users/:id', async (request) => ((await pool.query(SQL, [Number(request.params.id)]))[0] as unknown[])[0])
      return { app, close: () => pool.end() }
    }
  },
  // What lending a free connection directly saves: a pool.validate of the user's (here a no-op)
  // sends every borrow through tarn's queue, as every borrow went before.
  queued: { name: 'plugin, every default, borrowing through tarn\'s queue (a no-op pool.validate)', build: async (url) => ({ app: await pluginApp(url, { pool: { ...POOL, validate: () => true } }, true) }) },
  'no-scope': { name: 'plugin, fastify.db (no request scope)', build: async (url) => ({ app: await pluginApp(url, {}, false) }) },
  'no-timeout': { name: 'plugin, queryTimeoutMillis: 0', build: async (url) => ({ app: await pluginApp(url, { queryTimeoutMillis: 0 }, true) }) },
  'no-check': { name: 'plugin, no borrow check', build: async (url) => ({ app: await pluginApp(url, NO_CHECK, true) }) },
  'no-stats': { name: 'plugin, no acquire-wait statistics', build: async (url) => ({ app: await pluginApp(url, {}, true), around: withoutAcquireStats() }) },
  none: { name: 'plugin, all of these off', build: async (url) => ({ app: await pluginApp(url, { queryTimeoutMillis: 0, ...NO_CHECK }, false), around: withoutAcquireStats() }) }
}

export const VARIANT_KEYS = Object.keys(BUILDERS)

export async function buildVariant (key: string, url: string): Promise<Variant> {
  const builder = BUILDERS[key]
  if (builder === undefined) throw new Error(`no variant ${key}; expected one of ${VARIANT_KEYS.join(', ')}`)
  const variant = { key, name: builder.name, ...(await builder.build(url)) }
  await variant.app.ready()
  return variant
}

/** The ablation rows: what each default costs is the plugin's cost minus the variant's. */
export const ABLATIONS: Array<[what: string, key: string]> = [
  ['request scope (request.db: Proxy, statement ownership, hang-up watch)', 'no-scope'],
  ['default query timeout (a timer and a promise per statement)', 'no-timeout'],
  ['borrow check (socket check, one event-loop turn per borrow)', 'no-check'],
  ['acquire-wait statistics', 'no-stats'],
  ['all of the above', 'none']
]

/** Sends `requests` lookups through `variant.app`, `concurrency` at a time; returns each latency (ms). */
export async function drive (variant: Variant, requests: number, concurrency: number): Promise<number[]> {
  const latencies: number[] = []
  let next = 0
  variant.around?.on()
  try {
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < requests) {
        next += 1
        const sent = performance.now()
        const response = await variant.app.inject({ method: 'GET', url: `/users/${(next % 1000) + 1}` })
        if (response.statusCode !== 200) throw new Error(`${variant.key}: ${response.statusCode} ${response.body}`)
        latencies.push(performance.now() - sent)
      }
    }))
  } finally {
    variant.around?.off()
  }
  return latencies
}

export async function closeVariant (variant: Variant): Promise<void> {
  await variant.app.close()
  await variant.close?.()
}
