import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, sep } from 'node:path'

// lib/ is built in layers that import one way (docs/architecture.md draws them). Each file
// belongs to the layer of the longest prefix below that matches its path; it may import its own
// layer and the ones before it, never one after. A type-only import counts: a type that runs
// upward ties the lower layer to the upper one all the same. And no file may import itself back
// through others (a cycle), whatever the layers say.
const LAYERS: ReadonlyArray<{ name: string, paths: readonly string[] }> = [
  // What everyone may import: coded errors, the event channels, secret scrubbing.
  { name: 'shared', paths: ['errors.ts', 'events/', 'logging/redact.ts'] },
  // The one place that names knex's, tarn's and mysql2's private parts.
  { name: 'driver', paths: ['driver/'] },
  // Options, and the numbers they are resolved with; the bridges of the libraries' logs.
  { name: 'config', paths: ['options/', 'logging/', 'pool/budget.ts', 'pool/server-limits.ts'] },
  // Policies for statements, then for connections (a connect failure is classified by query/).
  { name: 'query', paths: ['query/'] },
  { name: 'pool', paths: ['pool/'] },
  // Several hosts: which one a connection goes to, what each says of its role and lag.
  { name: 'hosts', paths: ['hosts/'] },
  // What operators read: metrics, leak detection, the slow-query log (subscribers of events/).
  { name: 'telemetry', paths: ['telemetry/'] },
  // knex's client and runner subclasses, and the state they share.
  { name: 'client', paths: ['client/'] },
  // One process's pool: built per pid, warmed, closed.
  { name: 'lifecycle', paths: ['lifecycle/'] },
  // The Fastify plugins.
  { name: 'plugin', paths: ['index.ts', 'request/', 'worker/', 'cluster/'] }
]

const lib = join(__dirname, '..', 'lib')

function sources (directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name)
    return entry.isDirectory() ? sources(path) : path.endsWith('.ts') ? [path] : []
  })
}

/** The path under lib/, with forward slashes. */
function name (file: string): string {
  return relative(lib, file).split(sep).join('/')
}

function layerOf (file: string): number {
  const path = name(file)
  let best = -1
  let bestLength = -1
  LAYERS.forEach((layer, index) => {
    for (const prefix of layer.paths) {
      if ((path === prefix || (prefix.endsWith('/') && path.startsWith(prefix))) && prefix.length > bestLength) {
        best = index
        bestLength = prefix.length
      }
    }
  })
  return best
}

// `import … from './x'`, `import type …`, `export … from`, `import('./x')`, `require('./x')`.
const IMPORT = /(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'|import\(\s*'(\.[^']+)'\s*\)|require\(\s*'(\.[^']+)'\s*\)/g

function importsOf (file: string): string[] {
  const source = readFileSync(file, 'utf8').replace(/^\s*\/\/.*$/gm, '')
  const found: string[] = []
  for (const match of source.matchAll(IMPORT)) {
    const target = join(dirname(file), match[1] ?? match[2] ?? match[3])
    const candidates = [`${target}.ts`, join(target, 'index.ts')]
    const resolved = candidates.find((candidate) => files.includes(candidate))
    if (resolved !== undefined) found.push(resolved)
  }
  return found
}

const files = sources(lib)
const graph = new Map(files.map((file) => [file, importsOf(file)]))

test('every file under lib/ belongs to a declared layer', () => {
  expect(files.filter((file) => layerOf(file) === -1).map(name)).toEqual([])
})

/** Imports that go up a layer, as `from (layer) -> to (layer)`. */
function upwardImports (edges: ReadonlyMap<string, readonly string[]>): string[] {
  const upward: string[] = []
  for (const [file, imports] of edges) {
    for (const target of imports) {
      if (layerOf(target) > layerOf(file)) upward.push(`${name(file)} (${LAYERS[layerOf(file)].name}) -> ${name(target)} (${LAYERS[layerOf(target)].name})`)
    }
  }
  return upward
}

/** Cycles, each as its files in order (a depth-first search; a back edge closes one). */
function cyclesOf (edges: ReadonlyMap<string, readonly string[]>): string[] {
  const cycles: string[] = []
  const state = new Map<string, 'open' | 'done'>()
  const stack: string[] = []
  const visit = (file: string): void => {
    state.set(file, 'open')
    stack.push(file)
    for (const target of edges.get(file) ?? []) {
      if (state.get(target) === 'open') cycles.push([...stack.slice(stack.indexOf(target)), target].map(name).join(' -> '))
      else if (!state.has(target)) visit(target)
    }
    stack.pop()
    state.set(file, 'done')
  }
  for (const file of edges.keys()) if (!state.has(file)) visit(file)
  return cycles
}

test('no file imports a file of a layer above its own', () => {
  expect(upwardImports(graph)).toEqual([])
})

test('no file imports itself back through other files', () => {
  expect(cyclesOf(graph)).toEqual([])
})

test('the checks catch a type-only import that runs upward, and a loop', () => {
  const file = (path: string) => join(lib, ...path.split('/'))
  const [runtime, cancel, connect] = [file('client/runtime.ts'), file('query/cancel.ts'), file('client/connect.ts')]
  expect(importsOf(cancel)).not.toContain(runtime)
  const edges = new Map([[cancel, [runtime]], [runtime, [connect]], [connect, [runtime]]])
  expect(upwardImports(edges)).toEqual(['query/cancel.ts (query) -> client/runtime.ts (client)'])
  expect(cyclesOf(edges)).toEqual(['client/runtime.ts -> client/connect.ts -> client/runtime.ts'])
  const typeOnly = "import type { ClientRuntime } from '../client/runtime'"
  expect([...typeOnly.matchAll(IMPORT)].map((match) => match[1])).toEqual(['../client/runtime'])
})
