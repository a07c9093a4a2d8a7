import { spawn } from 'node:child_process'
import { get } from 'node:http'
import { join } from 'node:path'
import { freePort } from '../support/private-server'
import { fail, fixed, median, table, writeResult } from './rig/report'

// `npm run bench:first-response`: the newcomer's wait (issue 11). From running `npm run example`
// (npm's own start-up included, as a person types it) to the first 200 from GET /health, polled
// every 10 ms; then Ctrl-C to the process group, and the next run. The first run fills Node's
// compile cache (Node 22+) as a first start on a machine does; it is reported apart. Every run is
// a cold process start, so the machine's weather shows: the report gives every run.

const RUNS = Number(process.env.BENCH_RUNS ?? 7)
const WORKERS = process.env.WORKERS ?? '2'
const POLL_MILLIS = 10
const ROOT = join(__dirname, '..', '..')

function healthy (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    get({ host: '127.0.0.1', port, path: '/health', agent: false }, (response) => {
      response.resume()
      resolve(response.statusCode === 200)
    }).on('error', () => resolve(false))
  })
}

/** Milliseconds from `npm run example` to the first 200 from /health. */
async function once (): Promise<number> {
  const port = await freePort()
  const started = performance.now()
  const child = spawn('npm', ['run', '--silent', 'example'], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', WORKERS, LOG_LEVEL: 'warn' },
    stdio: 'ignore',
    detached: true
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  try {
    while (!(await healthy(port))) {
      if (child.exitCode !== null) throw new Error(`npm run example exited with ${child.exitCode} before answering`)
      await new Promise((resolve) => setTimeout(resolve, POLL_MILLIS))
    }
    return performance.now() - started
  } finally {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGINT')
    const code = await exited
    if (code !== 0) process.stderr.write(`npm run example exited with ${code} after Ctrl-C\n`)
  }
}

async function main (): Promise<void> {
  const first = await once()
  const runs: number[] = []
  for (let run = 1; run <= RUNS; run++) runs.push(await once())
  const sorted = [...runs].sort((a, b) => a - b)
  const header = [
    'Node', 'workers', 'first start (fills the compile cache) ms', `next ${RUNS} starts, median ms`, 'min-max ms',
    'every run ms'
  ]
  const range = `${fixed(sorted[0], 0)}-${fixed(sorted[sorted.length - 1], 0)}`
  const report = table(header, [
    [process.version, WORKERS, fixed(first, 0), fixed(median(runs), 0), range,
      runs.map((ms) => fixed(ms, 0)).join(', ')]
  ])
  await writeResult('first-response.md', `${report}\n`)
  process.stdout.write(`\n\`npm run example\` to the first 200 from /health\n\n${report}\n`)
}

main().catch(fail)
