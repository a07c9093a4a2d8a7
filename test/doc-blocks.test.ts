import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ensureBuilt } from './helpers/ensure-built'

// scripts/check-doc-blocks.mjs (`npm run test:docs`) is what keeps the documentation's examples
// compiling; these run it on small Markdown files to show it fails where a user's paste would,
// points at the Markdown line, and keeps its two markers' promises.

const ROOT = join(__dirname, '..')
const run = promisify(execFile)
let dir: string

beforeAll(async () => {
  ensureBuilt()
  dir = await mkdtemp(join(tmpdir(), 'doc-blocks-'))
}, 240_000)

afterAll(async () => {
  await rm(dir, { recursive: true, force: true })
})

async function check (markdown: string): Promise<{ ok: boolean, output: string }> {
  const file = join(dir, 'doc.md')
  await writeFile(file, markdown)
  try {
    const { stdout, stderr } = await run(process.execPath, [join(ROOT, 'scripts', 'check-doc-blocks.mjs'), file], { cwd: ROOT })
    return { ok: true, output: stdout + stderr }
  } catch (error) {
    const { stdout, stderr } = error as { stdout: string, stderr: string }
    return { ok: false, output: stdout + stderr }
  }
}

const fence = '```'

test('passes blocks that import the package, continue one another, or are skipped with a reason', async () => {
  const result = await check([
    '# A doc',
    `${fence}ts`,
    "import Fastify from 'fastify'",
    "import forkSafeDb from 'fastify-fork-safe-db'",
    "import forkSafeWorker from 'fastify-fork-safe-db/worker'",
    'const app = Fastify()',
    "await app.register(forkSafeDb, { connection: process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/app' })",
    fence,
    'Then, in the same module:',
    `${fence}ts continued`,
    'await app.register(forkSafeWorker, {})',
    fence,
    `${fence}ts skip-check shows a fragment of a config file`,
    'not: typescript at all',
    fence,
    `${fence}js`,
    'not: checked either',
    fence,
    ''
  ].join('\n'))
  expect(result.output).toContain('pass: 3 TypeScript blocks in 1 files (1 skipped, 1 modules)')
  expect(result.ok).toBe(true)
}, 60_000)

test('fails on what a user\'s paste would fail on, at the Markdown line, and on a skip without a reason', async () => {
  const result = await check([
    '# A doc',
    `${fence}typescript`,
    "import Fastify from 'fastify'",
    "import forkSafeDb from 'fastify-fork-safe-db'",
    'const app = Fastify()',
    'await app.register(forkSafeDb, { connection: process.env.MYSQL_URL })',
    fence,
    `${fence}ts`,
    "import Fastify from 'fastify'",
    "declare module 'fastify' { interface FastifyInstance { replica: string } }",
    'export const name: string = Fastify().replica',
    fence,
    `${fence}ts`,
    "import Fastify from 'fastify'",
    '// A block does not see another block\'s declarations.',
    'export const name: string = Fastify().replica',
    fence,
    `${fence}ts skip-check`,
    fence,
    ''
  ].join('\n'))
  expect(result.ok).toBe(false)
  expect(result.output).toMatch(/doc\.md:6:\d+ TS2769: /)
  expect(result.output).not.toMatch(/doc\.md:11:/)
  expect(result.output).toMatch(/doc\.md:16:\d+ TS2339: Property 'replica' does not exist/)
  expect(result.output).toMatch(/doc\.md:18: `skip-check` needs a reason/)
}, 60_000)
