import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { LOCAL_URL } from '../support/server-url'
import { ExampleProcess } from '../support/example-process'
import { sendOne } from '../support/http-load'

// The first five minutes (issue 11): what a newcomer does, from a fresh clone with only the
// README. The command lines are read from the README's "Try it" section, so the README cannot
// drift from what works. The second one (`npm install && npm test`) is this suite itself, and
// CI runs it on a clean clone; running it here again would run the suite inside the suite.

const ROOT = join(__dirname, '..')
const run = promisify(execFile)
// `npm install` in the clone: the packages (from npm's cache when CI or a developer installed
// before), then the `prepare` build of dist/ and the example.
const INSTALL_AND_START_MILLIS = 240_000

let clone: string | undefined
let example: ExampleProcess | undefined

afterEach(async () => {
  await example?.kill()
  example = undefined
  if (clone !== undefined) await rm(clone, { recursive: true, force: true })
  clone = undefined
})

/** The README's "Try it" commands: the shell lines of the first block under that heading. */
async function tryItCommands (): Promise<string[]> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('\n## Try it'))
  const block = /```sh\n([\s\S]*?)```/.exec(section)
  if (block === null) throw new Error('no sh block under "## Try it" in the README')
  return block[1].split('\n').map((line) => line.replace(/\s+#.*$/, '').trim()).filter((line) => line !== '')
}

/**
 * The environment a newcomer's shell would have: no npm variables from the `npm test` that may be
 * running us, this Node first on PATH, and MYSQL_URL only where the suite's server is not the
 * default one the example finds by itself.
 */
function newcomerEnvironment (): { env: Record<string, string>, unset: string[] } {
  const unset = Object.keys(process.env).filter((key) => key.toLowerCase().startsWith('npm_') || key === 'MYSQL_URL' || key === 'INIT_CWD')
  const env: Record<string, string> = { PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`, npm_config_prefer_offline: 'true', npm_config_fund: 'false', npm_config_audit: 'false' }
  const server = process.env.FORK_SAFE_DB_TEST_ADMIN_URL
  if (server !== undefined && server !== LOCAL_URL) {
    const url = new URL(server)
    url.pathname = '/'
    env.MYSQL_URL = url.toString()
  }
  return { env, unset }
}

test('the README\'s commands, in a fresh clone: install, a cluster answering /health, a clean Ctrl-C', async () => {
  const commands = await tryItCommands()
  expect(commands).toEqual(expect.arrayContaining(['npm install && npm run example', 'npm install && npm test']))

  clone = await mkdtemp(join(tmpdir(), 'fork-safe-db-clone-'))
  await run('git', ['clone', '--quiet', ROOT, clone])
  const { env, unset } = newcomerEnvironment()
  // A process group of its own, as a terminal gives a command line.
  example = await ExampleProcess.start({ ...env, WORKERS: '2' }, {
    detached: true,
    command: { file: 'bash', args: ['-c', 'npm install && npm run example'], cwd: clone, unset },
    timeoutMillis: INSTALL_AND_START_MILLIS
  })
  const health = await sendOne({ port: example.port, path: '/health', requests: 1, concurrency: 1 }, 0, false)
  expect(health).toMatchObject({ status: 200, workerPid: expect.any(Number) })

  const group = example.child.pid
  if (group === undefined) throw new Error('no pid')
  process.kill(-group, 'SIGINT')
  expect(await example.exited).toEqual({ code: 0, signal: null })
  expect(example.logged('all workers exited; bye')).toHaveLength(1)
}, INSTALL_AND_START_MILLIS + 30_000)
