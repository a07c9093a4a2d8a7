import { execFile } from 'node:child_process'
import type { AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import Fastify, { type FastifyInstance } from 'fastify'
import knex from 'knex'
import { createPool } from 'mysql2/promise'
import forkSafeDb from 'fastify-fork-safe-db'
import { ownDatabase } from '../example-app/database'
import { prepareSchema } from '../example-app/schema'
import { resolveServer } from '../support/server-url'
import { fixed, median, table, writeResult } from './report'

// `npm run bench:overhead`: what the PID-checked getter and the borrow check cost per request.
// One server process, four apps serving GET /users/:id, loaded one at a time by autocannon in a
// child process, in interleaved rounds so drift (CPU heat, the database's caches) hits every
// variant alike. Ratios are medians of the per-round ratios.

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 15)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10)
const POOL = { min: 10, max: 10 }
const SQL = 'SELECT id, name, email FROM users WHERE id = ? LIMIT 1'
const run = promisify(execFile)

interface Variant { key: string, name: string, app: FastifyInstance, close?: () => Promise<void> }

async function buildVariants (url: string): Promise<Variant[]> {
  const plugin = Fastify()
  await plugin.register(forkSafeDb, { connection: url, pool: POOL })
  plugin.get<{ Params: { id: string } }>('/users/:id', async (request) => request.db('users').select('id', 'name', 'email').where({ id: Number(request.params.id) }).first())

  const db = knex({ client: 'mysql2', connection: url, pool: POOL })
  const closure = Fastify()
  closure.get<{ Params: { id: string } }>('/users/:id', async (request) => db('users').select('id', 'name', 'email').where({ id: Number(request.params.id) }).first())

  const pool = createPool({ uri: url, connectionLimit: POOL.max })
  const raw = Fastify()
  raw.get<{ Params: { id: string } }>('/users/:id', async (request) => {
    const [rows] = await pool.query(SQL, [Number(request.params.id)])
    return (rows as unknown[])[0]
  })

  const constant = Fastify()
  constant.get('/users/:id', async () => ({ id: 42, name: 'User 42', email: 'user42@example.com' }))

  return [
    { key: 'a', name: '(a) request.db through the plugin', app: plugin },
    { key: 'b', name: '(b) knex in a closure, no plugin', app: closure, close: () => db.destroy() },
    { key: 'c', name: '(c) raw mysql2 pool (@fastify/mysql\'s path)', app: raw, close: () => pool.end() },
    { key: 'd', name: '(d) constant route (HTTP ceiling)', app: constant }
  ]
}

interface Measurement { rps: number, p99: number, cpuMicrosPerRequest: number }

// Throughput on a 2-core machine shared with the load generator and the database swings 10-15%
// from round to round; the CPU time this (server) process spends per request does not, and it
// is what the plugin adds. autocannon runs in a child process, so process.cpuUsage() here
// counts the server side only: Fastify, knex, mysql2 and the plugin.
async function autocannon (port: number, seconds: number): Promise<Measurement> {
  const bin = require.resolve('autocannon/autocannon.js')
  const cpuBefore = process.cpuUsage()
  const { stdout } = await run(process.execPath, [bin, '--json', '-c', String(CONNECTIONS), '-d', String(seconds), `http://127.0.0.1:${port}/users/42`], { maxBuffer: 64 * 1024 * 1024 })
  const cpu = process.cpuUsage(cpuBefore)
  const result = JSON.parse(stdout) as { requests: { average: number, total: number }, latency: { p99: number }, errors: number, non2xx: number }
  if (result.errors > 0 || result.non2xx > 0) throw new Error(`load had ${result.errors} errors and ${result.non2xx} non-2xx responses`)
  return { rps: result.requests.average, p99: result.latency.p99, cpuMicrosPerRequest: (cpu.user + cpu.system) / result.requests.total }
}

async function main (): Promise<void> {
  const server = await resolveServer()
  // The example's own database (created if missing), never the shared `test` one.
  const url = await ownDatabase(server.url)
  await prepareSchema(url)
  const variants = await buildVariants(url)
  const ports = new Map<string, number>()
  for (const variant of variants) {
    await variant.app.listen({ port: 0, host: '127.0.0.1' })
    ports.set(variant.key, (variant.app.server.address() as AddressInfo).port)
  }
  const results = new Map<string, Measurement[]>(variants.map((variant) => [variant.key, []]))
  try {
    // One short unrecorded pass: JIT, pools filled, the database's buffer pool warm.
    for (const variant of variants) await autocannon(ports.get(variant.key) ?? 0, 1)
    for (let round = 0; round < ROUNDS; round++) {
      // Pairs that are compared run back to back (a next to b, c next to d), and each pair swaps
      // its order every round: drift on this shared machine then hits both sides of a ratio alike.
      const order = round % 2 === 0 ? variants : [variants[1], variants[0], variants[3], variants[2]]
      for (const variant of order) results.get(variant.key)?.push(await autocannon(ports.get(variant.key) ?? 0, SECONDS))
      process.stderr.write(`round ${round + 1}/${ROUNDS} done\n`)
    }
  } finally {
    for (const variant of variants) {
      await variant.app.close()
      await variant.close?.()
    }
    await server.privateServer?.destroy()
  }

  const of = (key: string) => results.get(key) ?? []
  const ratio = (top: string, bottom: string) => median(of(top).map((entry, round) => entry.rps / of(bottom)[round].rps))
  // Throughput-equivalent: b's CPU per request over a's (above 1 means the plugin costs less).
  const cpuRatio = (top: string, bottom: string) => median(of(top).map((entry, round) => of(bottom)[round].cpuMicrosPerRequest / entry.cpuMicrosPerRequest))
  const rows = variants.map((variant) => [
    variant.name,
    fixed(median(of(variant.key).map((entry) => entry.rps)), 0),
    fixed(median(of(variant.key).map((entry) => entry.p99)), 1),
    fixed(median(of(variant.key).map((entry) => entry.cpuMicrosPerRequest)), 1)
  ])
  const report = [
    table(['variant', 'req/s (median of rounds)', 'p99 ms (median of rounds)', 'server CPU µs/request (median)'], rows),
    '',
    table(['ratio (median of per-round ratios)', 'req/s', 'server CPU per request (inverted)'], [
      ['a/b: plugin vs knex in a closure', fixed(ratio('a', 'b'), 3), fixed(cpuRatio('a', 'b'), 3)],
      ['a/c: plugin vs raw mysql2 pool', fixed(ratio('a', 'c'), 3), fixed(cpuRatio('a', 'c'), 3)]
    ])
  ].join('\n')
  await writeResult('overhead.json', JSON.stringify(Object.fromEntries(results), null, 2))
  process.stdout.write(`\nOverhead benchmark: ${ROUNDS} interleaved rounds x ${SECONDS} s per variant, ${CONNECTIONS} connections, pool ${POOL.min}-${POOL.max}, GET /users/42\n\n${report}\n`)
}

main().catch((error: unknown) => {
  process.stderr.write(`${String((error as Error)?.stack ?? error)}\n`)
  process.exit(1)
})
