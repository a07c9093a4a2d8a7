import { execFile } from 'node:child_process'
import { mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { builtinModules } from 'node:module'
import { tmpdir } from 'node:os'
import { isAbsolute, join } from 'node:path'

// The package as consumers get it: `npm pack`, unpacked into a throw-away project's
// node_modules, then required, imported and type-checked from there. The other tests load lib/
// or dist/ directly, which cannot catch a file missing from `files`, a wrong `exports` target, or
// declarations that only type-check inside this repository. Needs dist/ (Jest's global setup
// builds it when the sources are newer);
// no database: the consumers only register with options that fail before any socket opens.

const ROOT = join(__dirname, '..')
const PACKAGE = 'fastify-fork-safe-db'
const NPM_TIMEOUT_MILLIS = 60_000
const TAR_TIMEOUT_MILLIS = 30_000
const NODE_TIMEOUT_MILLIS = 30_000
const TSC_TIMEOUT_MILLIS = 90_000
const TSC = join(ROOT, 'node_modules', '.bin', 'tsc')
const INVALID_OPTIONS = { connection: 'mysql://app@127.0.0.1/shop', pool: { max: 0 } }

interface Outcome { code: number, stdout: string, stderr: string }

/** Runs a program to completion; resolves with its exit status and output whatever they are. */
function run (file: string, args: readonly string[], cwd: string, timeout: number): Promise<Outcome> {
  // No update check or funding notice from npm: nothing here may need the network.
  const env = { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false' }
  return new Promise((resolve, reject) => {
    execFile(file, args, { cwd, env, timeout, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      // A number is an exit code; anything else (ENOENT, a timeout's kill) means no verdict at all.
      if (error !== null && typeof error.code !== 'number') {
        reject(new Error(`${file} ${args.join(' ')} did not run to completion (${error.message})\n${stdout}\n${stderr}`))
        return
      }
      resolve({ code: error === null ? 0 : Number(error.code), stdout, stderr })
    })
  })
}

async function runOk (file: string, args: readonly string[], cwd: string, timeout: number): Promise<string> {
  const outcome = await run(file, args, cwd, timeout)
  if (outcome.code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${outcome.code}\n${outcome.stdout}\n${outcome.stderr}`)
  return outcome.stdout
}

let packDirectory: string | undefined
let consumerDirectory = ''
let installed = ''
/** The tarball's paths, without tar's leading `package/`. */
let entries: string[] = []

beforeAll(async () => {
  packDirectory = await mkdtemp(join(tmpdir(), 'fork-safe-db-pack-'))
  // Inside the repository, so that the peers (fastify, knex, mysql2) and the dependencies resolve
  // from its node_modules by walking up, as they would from an app's: no network install.
  consumerDirectory = await mkdtemp(join(ROOT, '.consumer-'))
  installed = join(consumerDirectory, 'node_modules', PACKAGE)

  // What `npm install` (prepare) built and Jest's global setup checked is fresh: no second build.
  await runOk('npm', ['pack', '--ignore-scripts', '--pack-destination', packDirectory], ROOT, NPM_TIMEOUT_MILLIS)
  const tarballs = (await readdir(packDirectory)).filter((name) => name.endsWith('.tgz'))
  expect(tarballs).toHaveLength(1)
  const tarball = join(packDirectory, tarballs[0])
  const listing = await runOk('tar', ['-tzf', tarball], ROOT, TAR_TIMEOUT_MILLIS)
  entries = listing.split('\n').filter((line) => line !== '').map((line) => line.replace(/^package\//, ''))

  // Extracted in place and renamed, not moved across from the temporary directory: rename(2)
  // cannot cross file systems, and /tmp often is another one.
  await mkdir(join(consumerDirectory, 'node_modules'))
  await runOk('tar', ['-xzf', tarball, '-C', join(consumerDirectory, 'node_modules')], ROOT, TAR_TIMEOUT_MILLIS)
  await rename(join(consumerDirectory, 'node_modules', 'package'), installed)

  // Without a package.json of its own the consumer would sit in the repository's package scope,
  // and Node and TypeScript would resolve `fastify-fork-safe-db` as a self-reference to the
  // repository's dist/ instead of the unpacked tarball: the tests would prove nothing.
  await writeFile(join(consumerDirectory, 'package.json'), JSON.stringify({ name: 'packaging-consumer', private: true, type: 'commonjs' }))
}, NPM_TIMEOUT_MILLIS + 2 * TAR_TIMEOUT_MILLIS)

afterAll(async () => {
  if (consumerDirectory !== '') await rm(consumerDirectory, { recursive: true, force: true })
  if (packDirectory !== undefined) await rm(packDirectory, { recursive: true, force: true })
})

async function runConsumerScript (name: string, source: string): Promise<unknown> {
  await writeFile(join(consumerDirectory, name), source)
  const outcome = await run(process.execPath, [name], consumerDirectory, NODE_TIMEOUT_MILLIS)
  // stderr is part of the expectation: a crash, or a warning the package prints on load, shows in the diff.
  expect({ code: outcome.code, stderr: outcome.stderr }).toEqual({ code: 0, stderr: '' })
  return JSON.parse(outcome.stdout)
}

interface TypeCheck { code: number, diagnostics: string, files: string[] }

async function typeCheck (project: string): Promise<TypeCheck> {
  const outcome = await run(TSC, ['-p', join(consumerDirectory, project), '--noEmit', '--pretty', 'false', '--listFiles'], consumerDirectory, TSC_TIMEOUT_MILLIS)
  // --listFiles prints one absolute path a line; everything else is a diagnostic.
  const lines = outcome.stdout.split('\n').filter((line) => line !== '')
  const files = lines.filter((line) => isAbsolute(line) && !/\): error TS\d+/.test(line))
  const diagnostics = lines.filter((line) => !files.includes(line)).join('\n') + outcome.stderr
  return { code: outcome.code, diagnostics, files }
}

test('every shipped source map carries the sources it maps, which the tarball does not ship', async () => {
  const maps = entries.filter((entry) => entry.endsWith('.js.map'))
  expect(maps.length).toBeGreaterThan(0)
  for (const map of maps) {
    const { sources, sourcesContent } = JSON.parse(await readFile(join(installed, map), 'utf8')) as { sources: string[], sourcesContent?: Array<string | null> }
    expect({ map, inlined: sourcesContent?.length === sources.length && sourcesContent.every((content) => typeof content === 'string' && content.length > 0) }).toEqual({ map, inlined: true })
  }
})

test('the tarball ships the build, its declarations and the docs (README and docs/, whose links it follows), and no sources or tests', async () => {
  expect(entries).toEqual(expect.arrayContaining([
    'package.json', 'README.md', 'CHANGELOG.md', 'LICENSE', 'dist/index.js', 'dist/index.d.ts', 'index.d.mts', 'dist/worker/index.js', 'dist/worker/index.d.ts', 'worker.d.mts',
    'dist/cluster/index.js', 'dist/cluster/index.d.ts', 'cluster.d.mts'
  ]))
  expect(entries.filter((entry) => entry.startsWith('test/') || entry.startsWith('lib/'))).toEqual([])
  expect(entries.filter((entry) => /\.[cm]?ts$/.test(entry) && !/\.d\.[cm]?ts$/.test(entry))).toEqual([])
  // An allow-list, so a new top-level file (a stray .tgz, the consumer directory, CI config) fails here.
  expect(entries.filter((entry) => !entry.startsWith('dist/') && !/^docs\/[\w-]+\.md$/.test(entry) && !['package.json', 'index.d.mts', 'worker.d.mts', 'cluster.d.mts', 'README.md', 'CHANGELOG.md', 'LICENSE'].includes(entry))).toEqual([])

  // Every file that main, types and the exports map point to is in the tarball.
  const manifest = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8'))
  const targets: string[] = [manifest.main, manifest.types]
  const collect = (value: unknown): void => {
    if (typeof value === 'string') targets.push(value)
    else if (value !== null && typeof value === 'object') Object.values(value).forEach(collect)
  }
  collect(manifest.exports)
  expect(targets.map((target) => target.replace(/^\.\//, '')).filter((target) => !entries.includes(target))).toEqual([])
})

test('the shipped JavaScript requires nothing but its dependencies, its peers and Node built-ins', async () => {
  // The consumer finds every package in the repository's node_modules, devDependencies included,
  // so running it cannot notice a runtime import of a package an app would not have installed.
  const manifest = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8'))
  const declared = new Set([...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {})])
  const undeclared = new Set<string>()
  for (const entry of entries.filter((name) => name.startsWith('dist/') && name.endsWith('.js'))) {
    // Comments dropped (a `// ...` to the end of its line, and JSDoc lines): they quote require() calls too.
    const code = (await readFile(join(installed, entry), 'utf8')).split('\n')
      .filter((line) => !/^\s*(\/\*|\*)/.test(line))
      .map((line) => line.replace(/(^|\s)\/\/.*$/, ''))
      .join('\n')
    for (const [, specifier] of code.matchAll(/\brequire\(\s*["']([^"']+)["']\s*\)/g)) {
      if (specifier.startsWith('.') || specifier.startsWith('node:') || builtinModules.includes(specifier)) continue
      const name = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : specifier.split('/')[0]
      if (!declared.has(name)) undeclared.add(`${name} (${entry})`)
    }
  }
  expect([...undeclared]).toEqual([])
})

test('a CommonJS consumer gets the plugin from require(), with default, named and error exports attached', async () => {
  const result = await runConsumerScript('consumer.cjs', `'use strict'
const Fastify = require('fastify')
const plugin = require('${PACKAGE}')

async function main () {
  const app = Fastify()
  app.register(plugin, ${JSON.stringify(INVALID_OPTIONS)})
  const error = await app.ready().then(() => undefined, (error) => error)
  await app.close()
  return {
    resolved: require.resolve('${PACKAGE}'),
    type: typeof plugin,
    defaultIsPlugin: plugin.default === plugin,
    namedIsPlugin: plugin.forkSafeDb === plugin,
    errorClass: typeof plugin.FST_FORK_SAFE_DB_INVALID_OPTION,
    errorCode: error && error.code,
    errorIsExported: error instanceof plugin.FST_FORK_SAFE_DB_INVALID_OPTION
  }
}
main().then((result) => process.stdout.write(JSON.stringify(result)))
`)
  expect(result).toEqual({
    resolved: join(installed, 'dist', 'index.js'),
    type: 'function',
    defaultIsPlugin: true,
    namedIsPlugin: true,
    errorClass: 'function',
    errorCode: 'FST_FORK_SAFE_DB_INVALID_OPTION',
    errorIsExported: true
  })
})

test('an ES module consumer gets one plugin as the default and the named import, the same one require() gives', async () => {
  const result = await runConsumerScript('consumer.mjs', `import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import forkSafeDb, { forkSafeDb as named } from '${PACKAGE}'

const app = Fastify()
app.register(forkSafeDb, ${JSON.stringify(INVALID_OPTIONS)})
const error = await app.ready().then(() => undefined, (error) => error)
await app.close()
const { FST_FORK_SAFE_DB_INVALID_OPTION } = forkSafeDb
process.stdout.write(JSON.stringify({
  resolved: fileURLToPath(import.meta.resolve('${PACKAGE}')),
  type: typeof forkSafeDb,
  defaultIsNamed: forkSafeDb === named,
  sameAsRequire: forkSafeDb === createRequire(import.meta.url)('${PACKAGE}'),
  constructedCode: new FST_FORK_SAFE_DB_INVALID_OPTION('x').code,
  errorCode: error?.code,
  errorIsExported: error instanceof FST_FORK_SAFE_DB_INVALID_OPTION
}))
`)
  expect(result).toEqual({
    resolved: join(installed, 'dist', 'index.js'),
    type: 'function',
    defaultIsNamed: true,
    // One instance for both module systems: no dual-package hazard.
    sameAsRequire: true,
    constructedCode: 'FST_FORK_SAFE_DB_INVALID_OPTION',
    errorCode: 'FST_FORK_SAFE_DB_INVALID_OPTION',
    errorIsExported: true
  })
})

// Regression: dist/index.js ends with `module.exports = Object.assign(...)`, and next to it Node's
// CommonJS export detection (cjs-module-lexer) dropped an `export * from './errors'`: in ESM,
// `import { FST_FORK_SAFE_DB_INVALID_OPTION } from 'fastify-fork-safe-db'` was a SyntaxError
// although the declarations promised it. lib/index.ts now names each re-export.
test('an ES module consumer can import every export by name, the error classes included', async () => {
  const result = await runConsumerScript('consumer-named.mjs', `import { createRequire } from 'node:module'
import forkSafeDb, { forkSafeDb as named, FST_FORK_SAFE_DB_INVALID_OPTION } from '${PACKAGE}'

const namespace = await import('${PACKAGE}')
const shipped = createRequire(import.meta.url)('${PACKAGE}')
process.stdout.write(JSON.stringify({
  defaultIsNamed: forkSafeDb === named,
  constructedCode: new FST_FORK_SAFE_DB_INVALID_OPTION('x').code,
  // fastify-plugin adds the camel-cased package name for its own interop; we do not declare it.
  notImportableByName: Object.keys(shipped).filter((name) => name !== 'fastifyForkSafeDb' && !(name in namespace))
}))
`)
  expect(result).toEqual({ defaultIsNamed: true, constructedCode: 'FST_FORK_SAFE_DB_INVALID_OPTION', notImportableByName: [] })
})

/** A consumer app in TypeScript: no `declare module` of its own, so the types must come from the tarball. */
function typedApp (importLines: string): string {
  return `import Fastify from 'fastify'
import type { Knex } from 'knex'
${importLines}

const options: ForkSafeDbOptions = { connection: 'mysql://app@127.0.0.1/shop', pool: { min: 0, max: 4 } }
const app = Fastify()
app.register(forkSafeDb, options)
// @ts-expect-error pool.max is a number: options typed as any would let this through.
app.register(forkSafeDb, { connection: 'mysql://app@127.0.0.1/shop', pool: { max: 'four' } })

app.get('/users', async (request) => {
  const scoped: Knex = request.db
  const rows: Array<{ id: number }> = await request.db('users').select('id')
  await app.db.raw('select 1')
  // @ts-expect-error knex has no such method: request.db typed as any would let this through.
  request.db.notAKnexMethod()
  return { rows, scoped: typeof scoped }
})

app.post('/orders', { db: { transaction: true } }, async (request) => {
  await request.db('orders').insert({ total: 1 })
  return { created: true }
})

export { app }
`
}

// Strict, and with the node16 resolution that honours the exports map; skipLibCheck off so the
// shipped .d.ts files are checked as well, an unresolvable import in them included.
const CONSUMER_TSCONFIG = {
  compilerOptions: {
    strict: true,
    target: 'ES2022',
    module: 'node16',
    moduleResolution: 'node16',
    types: ['node'],
    noEmit: true,
    skipLibCheck: false
  }
}

test('a TypeScript consumer, CommonJS or ESM, gets the plugin, its options and request.db / app.db typed as knex', async () => {
  // app.ts is CommonJS (the consumer's package.json says so) and uses the default import;
  // app.mts is ESM and uses the named import (for its default import see the next test).
  await writeFile(join(consumerDirectory, 'app.ts'), typedApp(
    `import forkSafeDb, { FST_FORK_SAFE_DB_INVALID_OPTION, type ForkSafeDbOptions } from '${PACKAGE}'\n` +
    "export const code: 'FST_FORK_SAFE_DB_INVALID_OPTION' = new FST_FORK_SAFE_DB_INVALID_OPTION('x').code"
  ))
  await writeFile(join(consumerDirectory, 'app.mts'), typedApp(`import { forkSafeDb, type ForkSafeDbOptions } from '${PACKAGE}'`))
  await writeFile(join(consumerDirectory, 'tsconfig.json'), JSON.stringify({ ...CONSUMER_TSCONFIG, files: ['app.ts', 'app.mts'] }))

  const { code, diagnostics, files } = await typeCheck('tsconfig.json')
  expect({ code, diagnostics }).toEqual({ code: 0, diagnostics: '' })
  expect(files).toContain(join(installed, 'dist', 'index.d.ts'))
}, TSC_TIMEOUT_MILLIS)

// Regression: dist/index.d.ts is a CommonJS declaration file; under node16/nodenext TypeScript
// types an ESM default import of a CommonJS module as its whole `module.exports`, so
// `app.register(forkSafeDb)` failed (TS2769) in .mts files and "type": "module" apps although it
// worked at run time. The exports map's `import` condition now points at index.d.mts.
test('an ESM TypeScript consumer can register the default import', async () => {
  await writeFile(join(consumerDirectory, 'default-import.mts'), typedApp(`import forkSafeDb, { type ForkSafeDbOptions } from '${PACKAGE}'`))
  await writeFile(join(consumerDirectory, 'tsconfig.esm-default.json'), JSON.stringify({ ...CONSUMER_TSCONFIG, files: ['default-import.mts'] }))

  const { code, diagnostics } = await typeCheck('tsconfig.esm-default.json')
  expect({ code, diagnostics }).toEqual({ code: 0, diagnostics: '' })
}, TSC_TIMEOUT_MILLIS)

test('the worker helper is the subpath fastify-fork-safe-db/worker, one plugin for require() and import', async () => {
  const result = await runConsumerScript('consumer-worker.mjs', `import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import forkSafeWorker, { forkSafeWorker as named, isWarmupRequest } from '${PACKAGE}/worker'

const required = createRequire(import.meta.url)('${PACKAGE}/worker')
const app = Fastify()
app.register(forkSafeWorker, { drainMillis: 'soon' })
const error = await app.ready().then(() => undefined, (error) => error)
await app.close()
process.stdout.write(JSON.stringify({
  resolved: fileURLToPath(import.meta.resolve('${PACKAGE}/worker')),
  type: typeof forkSafeWorker,
  defaultIsNamed: forkSafeWorker === named,
  sameAsRequire: forkSafeWorker === required && required.default === required && required.forkSafeWorker === required,
  isWarmupRequest: typeof isWarmupRequest === 'function' && required.isWarmupRequest === isWarmupRequest,
  errorCode: error?.code
}))
`)
  expect(result).toEqual({
    resolved: join(installed, 'dist', 'worker', 'index.js'),
    type: 'function',
    defaultIsNamed: true,
    sameAsRequire: true,
    isWarmupRequest: true,
    errorCode: 'FST_FORK_SAFE_DB_INVALID_OPTION'
  })
})

function typedWorkerApp (importLine: string): string {
  return `import Fastify from 'fastify'
${importLine}

const app = Fastify({ logger: true })
// Warm-up requests stay out of the log: in Fastify 5.0.0 too, which has no LogController.
app.setChildLoggerFactory((logger, bindings, options, raw) => logger.child(bindings, isWarmupRequest(raw) ? { ...options, level: 'silent' } : options))
app.register(forkSafeWorker, { drainMillis: 5000, warmup: { requests: [{ url: '/users/1' }], rounds: 20 } })
// @ts-expect-error drainMillis is a number: options typed as any would let this through.
app.register(forkSafeWorker, { drainMillis: 'soon' })
app.get('/users/:id', async (request) => ({ warmup: request.isWarmup }))

export async function stop (): Promise<boolean> {
  const report: RetireReport = await app.retire('SIGTERM')
  return report.closeTimedOut
}
`
}

test('a TypeScript consumer, CommonJS, ESM or with node10 resolution, gets the worker helper typed', async () => {
  await writeFile(join(consumerDirectory, 'worker-app.ts'), typedWorkerApp(`import forkSafeWorker, { isWarmupRequest, type RetireReport } from '${PACKAGE}/worker'`))
  await writeFile(join(consumerDirectory, 'worker-app.mts'), typedWorkerApp(`import forkSafeWorker, { isWarmupRequest, type RetireReport } from '${PACKAGE}/worker'`))
  await writeFile(join(consumerDirectory, 'tsconfig.worker.json'), JSON.stringify({ ...CONSUMER_TSCONFIG, files: ['worker-app.ts', 'worker-app.mts'] }))
  const modern = await typeCheck('tsconfig.worker.json')
  expect({ code: modern.code, diagnostics: modern.diagnostics }).toEqual({ code: 0, diagnostics: '' })
  expect(modern.files).toEqual(expect.arrayContaining([join(installed, 'dist', 'worker', 'index.d.ts'), join(installed, 'worker.d.mts')]))

  // node10 resolution ignores the exports map: typesVersions points it at the declarations.
  await writeFile(join(consumerDirectory, 'tsconfig.worker-node10.json'), JSON.stringify({
    compilerOptions: { ...CONSUMER_TSCONFIG.compilerOptions, module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true },
    files: ['worker-app.ts']
  }))
  const legacy = await typeCheck('tsconfig.worker-node10.json')
  expect({ code: legacy.code, diagnostics: legacy.diagnostics }).toEqual({ code: 0, diagnostics: '' })
}, 2 * TSC_TIMEOUT_MILLIS)

test('the cluster primary is the subpath fastify-fork-safe-db/cluster, the same module for require() and import, and it loads neither Fastify nor knex', async () => {
  const result = await runConsumerScript('consumer-cluster.mjs', `import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { startCluster, requestRecycle } from '${PACKAGE}/cluster'

const require = createRequire(import.meta.url)
const required = require('${PACKAGE}/cluster')
const loaded = Object.keys(require.cache)
let error
try { startCluster({ workers: 0 }) } catch (caught) { error = caught }
process.stdout.write(JSON.stringify({
  resolved: fileURLToPath(import.meta.resolve('${PACKAGE}/cluster')),
  same: startCluster === required.startCluster && requestRecycle === required.requestRecycle,
  recycleOutsideACluster: requestRecycle(),
  heavy: loaded.filter((file) => /node_modules[\\\\/](fastify|knex|mysql2)[\\\\/]/.test(file)).length,
  errorCode: error?.code,
  errorIsExported: error instanceof require('${PACKAGE}').FST_FORK_SAFE_DB_INVALID_OPTION
}))
`)
  expect(result).toEqual({
    resolved: join(installed, 'dist', 'cluster', 'index.js'),
    same: true,
    recycleOutsideACluster: false,
    heavy: 0,
    errorCode: 'FST_FORK_SAFE_DB_INVALID_OPTION',
    errorIsExported: true
  })
})

const typedPrimary = (importLine: string) => `import pino from 'pino'
${importLine}

const cluster: ForkSafeCluster = startCluster({ workers: 2, exec: 'dist/worker.js', env: { PORT: '3000' }, logger: pino() })
// @ts-expect-error workers is a number: options typed as any would let this through.
startCluster({ workers: 'two' })
export async function main (): Promise<boolean> {
  await cluster.roll()
  requestRecycle()
  return cluster.ready
}
`

test('a TypeScript consumer, CommonJS, ESM or with node10 resolution, gets the cluster primary typed', async () => {
  const importLine = `import { requestRecycle, startCluster, type ForkSafeCluster } from '${PACKAGE}/cluster'`
  await writeFile(join(consumerDirectory, 'primary.ts'), typedPrimary(importLine))
  await writeFile(join(consumerDirectory, 'primary.mts'), typedPrimary(importLine))
  await writeFile(join(consumerDirectory, 'tsconfig.cluster.json'), JSON.stringify({ ...CONSUMER_TSCONFIG, compilerOptions: { ...CONSUMER_TSCONFIG.compilerOptions, esModuleInterop: true }, files: ['primary.ts', 'primary.mts'] }))
  const modern = await typeCheck('tsconfig.cluster.json')
  expect({ code: modern.code, diagnostics: modern.diagnostics }).toEqual({ code: 0, diagnostics: '' })
  expect(modern.files).toEqual(expect.arrayContaining([join(installed, 'dist', 'cluster', 'index.d.ts'), join(installed, 'cluster.d.mts')]))

  await writeFile(join(consumerDirectory, 'tsconfig.cluster-node10.json'), JSON.stringify({
    compilerOptions: { ...CONSUMER_TSCONFIG.compilerOptions, module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true },
    files: ['primary.ts']
  }))
  const legacy = await typeCheck('tsconfig.cluster-node10.json')
  expect({ code: legacy.code, diagnostics: legacy.diagnostics }).toEqual({ code: 0, diagnostics: '' })
}, 2 * TSC_TIMEOUT_MILLIS)
