import { execFile } from 'node:child_process'
import type { AddressInfo } from 'node:net'
import { promisify } from 'node:util'
import { benchDatabase } from './rig/database'
import { fail, fixed, median, table, writeResult } from './rig/report'
import { buildVariant, chosenVariants, closeVariant, type Variant } from './rig/variants'

// `npm run bench:overhead`: what the plugin costs per request over HTTP. One server process, the
// variants of bench/rig/variants.ts (by default the plugin, bare knex, a raw mysql2 pool and a
// constant route) each listening on its own port, loaded one at a time by autocannon in a child
// process, in interleaved rounds so drift (CPU heat, the database's caches) hits every variant
// alike. Ratios are medians of the per-round ratios.

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 15)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10)
const run = promisify(execFile)

interface Measurement { rps: number, p99: number, cpuMicrosPerRequest: number }
interface AutocannonResult {
  requests: { average: number, total: number }
  latency: { p99: number }
  errors: number
  non2xx: number
}

// Throughput on a 2-core machine shared with the load generator and the database swings 10-15%
// from round to round; the CPU time this (server) process spends per request does not, and it
// is what the plugin adds. autocannon runs in a child process, so process.cpuUsage() here
// counts the server side only: Fastify, knex, mysql2 and the plugin.
async function autocannon (port: number, seconds: number): Promise<Measurement> {
  const bin = require.resolve('autocannon/autocannon.js')
  const cpuBefore = process.cpuUsage()
  const args = [bin, '--json', '-c', String(CONNECTIONS), '-d', String(seconds), `http://127.0.0.1:${port}/users/42`]
  const { stdout } = await run(process.execPath, args, { maxBuffer: 64 * 1024 * 1024 })
  const cpu = process.cpuUsage(cpuBefore)
  const result = JSON.parse(stdout) as AutocannonResult
  if (result.errors > 0 || result.non2xx > 0) {
    throw new Error(`load had ${result.errors} errors and ${result.non2xx} non-2xx responses`)
  }
  const cpuMicrosPerRequest = (cpu.user + cpu.system) / result.requests.total
  return { rps: result.requests.average, p99: result.latency.p99, cpuMicrosPerRequest }
}

async function main (): Promise<void> {
  const { url, release } = await benchDatabase()
  const variants: Variant[] = []
  const ports = new Map<string, number>()
  const results = new Map<string, Measurement[]>()
  try {
    for (const key of chosenVariants(['plugin', 'knex', 'mysql2', 'constant'])) {
      const variant = await buildVariant(key, url)
      variants.push(variant)
      await variant.app.listen({ port: 0, host: '127.0.0.1' })
      ports.set(key, (variant.app.server.address() as AddressInfo).port)
      results.set(key, [])
    }
    const load = (variant: Variant, seconds: number) => autocannon(ports.get(variant.key) ?? 0, seconds)
    // One short unrecorded pass: JIT, pools filled, the database's buffer pool warm.
    for (const variant of variants) await load(variant, 1)
    for (let round = 0; round < ROUNDS; round++) {
      // Neighbours in the list run back to back, and each pair swaps its order every other round:
      // drift on this shared machine then hits both sides of a ratio alike.
      const order = round % 2 === 0 ? variants : variants.map((_, i) => variants[i ^ 1] ?? variants[i])
      for (const variant of order) results.get(variant.key)?.push(await load(variant, SECONDS))
      process.stderr.write(`round ${round + 1}/${ROUNDS} done\n`)
    }
  } finally {
    for (const variant of variants) await closeVariant(variant)
    await release()
  }

  const of = (key: string) => results.get(key) ?? []
  const ratio = (top: string, bottom: string) =>
    median(of(top).map((entry, round) => entry.rps / of(bottom)[round].rps))
  // Throughput-equivalent: the bottom's CPU per request over the top's (above 1: the top costs less).
  const cpuRatio = (top: string, bottom: string) =>
    median(of(top).map((entry, round) => of(bottom)[round].cpuMicrosPerRequest / entry.cpuMicrosPerRequest))
  const rows = variants.map((variant) => [
    variant.name,
    fixed(median(of(variant.key).map((entry) => entry.rps)), 0),
    fixed(median(of(variant.key).map((entry) => entry.p99)), 1),
    fixed(median(of(variant.key).map((entry) => entry.cpuMicrosPerRequest)), 1)
  ])
  const ratios = ['knex', 'mysql2'].filter((key) => results.has('plugin') && results.has(key))
    .map((key) => [`plugin / ${key}`, fixed(ratio('plugin', key), 3), fixed(cpuRatio('plugin', key), 3)])
  const report = [
    table(['variant', 'req/s (median of rounds)', 'p99 ms (median of rounds)', 'server CPU µs/request (median)'], rows),
    '',
    table(['ratio (median of per-round ratios)', 'req/s', 'server CPU per request (inverted)'], ratios)
  ].join('\n')
  await writeResult('overhead.json', JSON.stringify(Object.fromEntries(results), null, 2))
  const heading = `Overhead benchmark: ${ROUNDS} interleaved rounds x ${SECONDS} s per variant, ` +
    `${CONNECTIONS} connections, ` +
    'pools of 10, GET /users/42'
  process.stdout.write(`\n${heading}\n\n${report}\n`)
}

main().catch(fail)
