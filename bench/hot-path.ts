import { benchDatabase } from './rig/database'
import { bootstrapInterval, fail, fixed, median, percentile, table, writeResult } from './rig/report'
import {
  ABLATIONS, buildVariant, chosenVariants, closeVariant, drive, VARIANT_KEYS, type Variant
} from './rig/variants'

// `npm run bench:hot-path`: what the plugin costs per request, measured so the number holds
// still on a shared machine whose speed swings threefold.
//
// One process (node --single-threaded: V8's compiler and GC run on the measured thread, not on
// helper threads whose time would land in whichever window they happen to overlap). Every
// variant (bench/rig/variants.ts) serves the same one-row lookup through app.inject(), 10 requests
// at a time, in short windows interleaved round by round (the order rotates and flips), so drift
// hits all of them alike. What is compared is the CPU this process spends per request
// (process.cpuUsage(): time stolen by neighbours is not counted), as a ratio to bare knex in the
// same round; the report gives the median of the per-round ratios and a bootstrap 95% interval.
// A full GC runs before every window, so each window pays for its own garbage.

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 40)
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 600)
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 10)

interface Window { cpuMicros: number, wallMicros: number, p99Millis: number }

async function measure (variant: Variant, requests = REQUESTS): Promise<Window> {
  const cpu = process.cpuUsage()
  const started = performance.now()
  const latencies = await drive(variant, requests, CONCURRENCY)
  const wall = performance.now() - started
  const used = process.cpuUsage(cpu)
  latencies.sort((a, b) => a - b)
  return {
    cpuMicros: (used.user + used.system) / requests,
    wallMicros: (wall * 1000) / requests,
    p99Millis: percentile(latencies, 0.99)
  }
}

const collect = (globalThis as { gc?: () => void }).gc

async function main (): Promise<void> {
  if (collect === undefined) throw new Error('run with node --expose-gc (npm run bench:hot-path does)')
  const { url, release } = await benchDatabase()
  const keys = chosenVariants(VARIANT_KEYS.filter((key) => key !== 'constant'))
  const variants: Variant[] = []
  for (const key of keys) variants.push(await buildVariant(key, url))
  const results = new Map<string, Window[]>(variants.map((variant) => [variant.key, []]))
  try {
    // Unrecorded: JIT, pools filled, the database's buffer pool warm.
    for (const variant of variants) await measure(variant, 2 * REQUESTS)
    for (let round = 0; round < ROUNDS; round++) {
      const start = round % variants.length
      const rotated = [...variants.slice(start), ...variants.slice(0, start)]
      for (const variant of round % 2 === 0 ? rotated : rotated.reverse()) {
        collect()
        results.get(variant.key)?.push(await measure(variant))
      }
      process.stderr.write(`round ${round + 1}/${ROUNDS}\r`)
    }
  } finally {
    for (const variant of variants) await closeVariant(variant)
    await release()
  }

  const of = (key: string) => results.get(key) ?? []
  const base = of('knex')
  // Throughput-equivalent: bare knex's CPU per request over the variant's (1.0 = costs nothing).
  const ratios = (key: string) => of(key).map((window, round) => base[round].cpuMicros / window.cpuMicros)
  const spread = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b)
    return `${fixed(percentile(sorted, 0.1), 2)}-${fixed(percentile(sorted, 0.9), 2)}`
  }
  const rows = variants.map((variant) => {
    const windows = of(variant.key)
    const perRound = ratios(variant.key)
    const [low, high] = bootstrapInterval(perRound, median)
    return [
      variant.name,
      fixed(median(windows.map((window) => window.cpuMicros)), 1),
      fixed(median(perRound), 3),
      `${fixed(low, 3)}-${fixed(high, 3)}`,
      fixed(median(windows.map((window) => window.wallMicros)) / 1000, 3),
      fixed(median(windows.map((window) => window.p99Millis)), 2),
      spread(windows.map((window) => window.p99Millis))
    ]
  })
  // What turning a default off saves: the median of the per-round differences from the plugin.
  const baseCpu = median(base.map((window) => window.cpuMicros))
  const ablation = ABLATIONS.filter(([, key]) => results.has(key)).map(([what, key]) => {
    const saved = of(key).map((window, round) => of('plugin')[round].cpuMicros - window.cpuMicros)
    const [low, high] = bootstrapInterval(saved, median)
    const share = fixed(100 * median(saved) / baseCpu, 1)
    return [what, fixed(median(saved), 1), `${fixed(low, 1)} to ${fixed(high, 1)}`, share]
  })
  const report = [
    table([
      'variant', 'CPU µs/request', 'vs bare knex (median of per-round CPU ratios)', '95% interval', 'wall ms/request',
      'p99 ms (median of rounds)', 'p99 ms (10th-90th pct of rounds)'
    ], rows),
    '',
    table(['default', 'CPU µs/request it costs', '95% interval', '% of bare knex\'s CPU'], ablation)
  ].join('\n')
  await writeResult('hot-path.json', JSON.stringify(Object.fromEntries(results), null, 2))
  const heading = `Hot path: ${ROUNDS} interleaved rounds x ${REQUESTS} requests per variant, ` +
    `${CONCURRENCY} at a time, ` +
    `app.inject(), pools of 10, Node ${process.version}`
  process.stdout.write(`\n${heading}\n\n${report}\n`)
}

main().catch(fail)
