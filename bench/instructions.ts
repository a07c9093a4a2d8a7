import { execFile, spawn } from 'node:child_process'
import { rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { benchDatabase } from './rig/database'
import { fail, fixed, median, table, writeResult } from './rig/report'
import { ABLATIONS, chosenVariants } from './rig/variants'

// `npm run bench:instructions`: instructions executed per request, counted by
// valgrind --tool=callgrind. Counts do not move with the machine's weather (the same run gives
// the same count, give or take a few hundredths of a percent, loaded or not), so this is the
// figure a change can be judged by. Each variant runs in a fresh node with V8 made as
// deterministic as it goes (--single-threaded: compiling and collecting on the main thread;
// --predictable, fixed seeds), under callgrind with instrumentation off: once it has served
// WARMUP requests the driver switches counting on (callgrind_control), the worker serves N, and
// counting goes off again. Total / N is the cost of one warm request: no start-up, no warm-up.
// RUNS runs per variant; the report gives their median and their spread.
//
// No major GC runs in the window. Where one falls is a cliff: a full mark-compact costs about
// 100k instructions per request of a 2,000-request window, and with V8's default old-generation
// limit one came every 1,500-2,000 requests, so a window held one or none, and two variants
// differed by whether it did (bare knex 757.8k with one, the plugin 647.7k without, on Node 24).
// So the old generation starts at 1 GB (--initial-old-space-size): after the forced GC before
// the window, nothing triggers another, and the window counts the requests' own work and their
// scavenges. What the major GCs would have to collect is reported beside it, deterministic too:
// the bytes each request promoted to the old generation.
//
// What is counted excludes V8's compilers (TurboFan, Maglev, Sparkplug: callgrind attributes
// instructions to functions, and theirs are named). Even after thousands of warm-up requests
// they are still at work, on the main thread, and their share moves from run to run: with 1,000
// warm-up requests they were 57% of the window, with 5,000 still 20%. Compiling is a cost a
// process pays once, not per request; the total with them is reported beside it.

const run = promisify(execFile)
const N = Number(process.env.BENCH_REQUESTS ?? 2000)
const WARMUP = Number(process.env.BENCH_WARMUP ?? 5000)
const RUNS = Number(process.env.BENCH_RUNS ?? 2)
const COMPILERS = /v8::internal::(compiler|maglev|baseline)::|v8::internal::Compiler\b|CompilationJob/
// One at a time: with several in flight, how responses batch into event-loop turns (and so the
// count) follows the database's timing.
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 1)
// BENCH_NODE_FLAGS=--perf-basic-prof names the JIT's code (/tmp/perf-<pid>.map) for attributing
// a difference to JavaScript functions; counts taken with it are not comparable to those without.
const EXTRA_NODE_FLAGS = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter((flag) => flag !== '')
const V8_DETERMINISM = [
  '--single-threaded', '--predictable', '--predictable-gc-schedule', '--hash-seed=1', '--random-seed=1', '--expose-gc',
  '--no-memory-reducer', '--no-incremental-marking-task', '--initial-old-space-size=1024'
]
const VARIANTS = chosenVariants(['plugin', 'knex', 'mysql2', 'no-scope', 'no-timeout', 'no-check', 'none'])

interface Count { all: number, withoutCompilers: number, promotedBytes: number }

/** Instructions per request of a callgrind output: all of them, and those outside V8's compilers. */
async function perRequest (out: string): Promise<Omit<Count, 'promotedBytes'>> {
  const { stdout } = await run('callgrind_annotate', ['--threshold=100', out], { maxBuffer: 256 * 1024 * 1024 })
  let all = 0
  let compilers = 0
  for (const line of stdout.split('\n')) {
    const match = /^\s*([\d,]+)\s+\([^)]*\)\s+(.*)$/.exec(line)
    if (match === null) continue
    const count = Number(match[1].replaceAll(',', ''))
    if (match[2].includes('PROGRAM TOTALS')) all = count
    else if (COMPILERS.test(match[2])) compilers += count
  }
  if (all === 0) throw new Error(`no PROGRAM TOTALS in callgrind_annotate's output for ${out}`)
  return { all: all / N, withoutCompilers: (all - compilers) / N }
}

/** Instructions counted while the worker serves `N` warm requests of variant `key`. */
async function instructions (key: string, url: string): Promise<Count> {
  const out = join(tmpdir(), `fork-safe-db-callgrind-${key}-${process.pid}.out`)
  const child = spawn('valgrind', [
    '--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${out}`,
    process.execPath, ...V8_DETERMINISM, ...EXTRA_NODE_FLAGS, join(__dirname, 'instructions-worker.js'),
    key, url, String(WARMUP), String(N), String(CONCURRENCY)
  ], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  let stdout = ''
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  const said = (word: string) => new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      if (!chunk.toString().includes(word)) return
      child.stdout.off('data', onData)
      resolve()
    }
    child.stdout.on('data', onData)
    const early = () => reject(new Error(`worker exited before saying "${word}":\n${stderr.slice(-2000)}`))
    exited.then(early, () => {})
  })
  const instrumentation = async (state: 'on' | 'off') =>
    run('callgrind_control', [`--instr=${state}`, String(child.pid)])
  try {
    await said('warm')
    await instrumentation('on')
    child.stdin.write('go\n')
    await said('done')
    await instrumentation('off')
    child.stdin.write('exit\n')
    if (await exited !== 0) throw new Error(`worker failed:\n${stderr.slice(-2000)}`)
    const promoted = Number(/done (-?\d+)/.exec(stdout)?.[1])
    if (!(promoted >= 0)) {
      throw new Error(`a major GC ran in ${key}'s counted window (old generation ${promoted} bytes): ` +
        'its count would hold it')
    }
    return { ...(await perRequest(out)), promotedBytes: promoted / N }
  } finally {
    child.kill('SIGKILL')
    if (process.env.BENCH_KEEP === undefined) await rm(out, { force: true })
  }
}

async function main (): Promise<void> {
  const { url, release } = await benchDatabase()
  const runs = new Map<string, Count[]>()
  try {
    for (let attempt = 0; attempt < RUNS; attempt++) {
      for (const key of VARIANTS) {
        const count = await instructions(key, url)
        runs.set(key, [...(runs.get(key) ?? []), count])
        const line = `${Math.round(count.withoutCompilers)} instructions per request ` +
          `(${Math.round(count.all)} with V8's compilers)`
        process.stderr.write(`${key}: ${line}\n`)
      }
    }
  } finally {
    await release()
  }
  const steady = new Map([...runs].map(([key, counts]) => [key, counts.map((count) => count.withoutCompilers)]))
  const perRequest = new Map([...steady].map(([key, counts]) => [key, median(counts)]))
  const knex = perRequest.get('knex') ?? Number.NaN
  const rows = [...steady].map(([key, counts]) => [
    key,
    fixed(median(counts) / 1000, 1),
    `${fixed(Math.min(...counts) / 1000, 1)}-${fixed(Math.max(...counts) / 1000, 1)}`,
    fixed(knex / median(counts), 3),
    fixed(median((runs.get(key) ?? []).map((count) => count.all)) / 1000, 1),
    fixed(median((runs.get(key) ?? []).map((count) => count.promotedBytes)), 0)
  ])
  const ablation = ABLATIONS.filter(([, key]) => perRequest.has(key)).map(([what, key]) => {
    const saved = (perRequest.get('plugin') ?? Number.NaN) - (perRequest.get(key) ?? Number.NaN)
    return [what, fixed(saved / 1000, 1), fixed((100 * saved) / knex, 1)]
  })
  const report = [
    table([
      'variant', 'k instructions/request, without V8\'s compilers (median of runs)', 'min-max of runs',
      'vs bare knex (throughput-equivalent)', 'k instructions/request with them',
      'bytes/request promoted to the old generation'
    ], rows),
    '',
    table(['default', 'k instructions/request it costs', '% of bare knex'], ablation)
  ].join('\n')
  await writeResult('instructions.json', JSON.stringify(Object.fromEntries(runs), null, 2))
  const heading = `Instructions per request (callgrind, node ${V8_DETERMINISM.join(' ')}, ${process.version}): ` +
    `${RUNS} runs per variant, each ${WARMUP} warm-up requests then ${N} counted, ${CONCURRENCY} at a time`
  process.stdout.write(`\n${heading}\n\n${report}\n`)
}

main().catch(fail)
