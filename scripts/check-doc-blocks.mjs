// Type-checks every TypeScript code block (```ts, ```typescript) of README.md and docs/**/*.md under
// `strict`, against the installed Fastify, knex and mysql2 and the package's built types, so an
// example a user pastes compiles. `npm run test:docs`; needs `npm run build` first (dist/).
//
// Each block is written to .doc-blocks/ (gitignored) as an ES module (.mts). The directory sits
// inside the package, so `import … from 'fastify-fork-safe-db'` (and '/worker', and any other
// subpath) resolves through package.json's own `exports` (a self-reference, as in a user's ESM
// project under nodenext): the checked types are the ones that ship, index.d.mts included.
//
// A block is standalone: it imports what it uses. Words after the language in the fence line:
//   ```ts continued           appends the block to the previous TypeScript block of the same file
//                             (a story told in steps), checked as one module
//   ```ts skip-check <reason> leaves the block out; the reason is required (keep it rare)
// Blocks that augment a module (`declare module`, `declare global`) are checked in a program of
// their own, so their declarations cannot make another block compile.
//
// Usage: node scripts/check-doc-blocks.mjs [file.md …]   (default: README.md and docs/**/*.md)
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(join(root, 'package.json'))
const ts = require('typescript')
const outDir = join(root, '.doc-blocks')

const LANGUAGES = new Set(['ts', 'typescript', 'mts'])

function markdownFiles () {
  const files = [join(root, 'README.md')]
  const walk = (dir) => {
    if (!existsSync(dir)) return
    for (const entry of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.md')) files.push(path)
    }
  }
  walk(join(root, 'docs'))
  return files
}

// CommonMark fences: up to three spaces of indent, three or more backticks or tildes; the closing
// fence uses the same character, at least as many, and nothing after it.
function extractBlocks (file) {
  const lines = readFileSync(file, 'utf8').split('\n')
  const blocks = []
  const problems = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^( {0,3})(`{3,}|~{3,})\s*(.*)$/.exec(lines[i])
    if (!open) continue
    const [, indent, fence, info] = open
    const body = []
    let j = i + 1
    const close = new RegExp(`^ {0,3}${fence[0] === '`' ? '`' : '~'}{${fence.length},}\\s*$`)
    while (j < lines.length && !close.test(lines[j])) {
      body.push(lines[j].startsWith(indent) ? lines[j].slice(indent.length) : lines[j].trimStart())
      j++
    }
    const [language = '', ...words] = info.trim().split(/\s+/)
    if (LANGUAGES.has(language.toLowerCase())) {
      const where = `${relative(root, file)}:${i + 1}`
      if (words[0] === 'skip-check') {
        if (words.length < 2) problems.push(`${where}: \`skip-check\` needs a reason after it`)
        blocks.push({ file, line: i + 2, code: body.join('\n'), skip: true })
      } else if (words.length > 0 && words[0] !== 'continued') {
        problems.push(`${where}: unknown word \`${words[0]}\` after the language (expected \`continued\` or \`skip-check <reason>\`)`)
      } else {
        blocks.push({ file, line: i + 2, code: body.join('\n'), continued: words[0] === 'continued' })
      }
    }
    i = j
  }
  return { blocks, problems }
}

// Groups a file's blocks into modules: a `continued` block joins the module before it.
function modulesOf (file, blocks, problems) {
  const modules = []
  for (const block of blocks) {
    if (block.skip) continue
    if (block.continued) {
      const previous = modules.at(-1)
      if (!previous) {
        problems.push(`${relative(root, file)}:${block.line - 1}: a \`continued\` block with no TypeScript block before it`)
        continue
      }
      previous.segments.push({ startLine: previous.code.split('\n').length + 1, mdLine: block.line, lines: block.code.split('\n').length })
      previous.code += '\n' + block.code
    } else {
      modules.push({ file, code: block.code, segments: [{ startLine: 1, mdLine: block.line, lines: block.code.split('\n').length }] })
    }
  }
  return modules
}

// Maps a line of a written module back to README.md/docs (1-based lines both ways).
function markdownLine (module, line) {
  const segment = module.segments.findLast((s) => s.startLine <= line) ?? module.segments[0]
  return segment.mdLine + (line - segment.startLine)
}

// Read from node_modules directly: a package whose `exports` leaves out package.json (knex 3.2.0)
// cannot be resolved as `<name>/package.json`.
function versionOf (name) {
  for (let dir = root; ; dir = dirname(dir)) {
    const manifest = join(dir, 'node_modules', name, 'package.json')
    if (existsSync(manifest)) return JSON.parse(readFileSync(manifest, 'utf8')).version
    if (dirname(dir) === dir) return 'not installed'
  }
}

const compilerOptions = {
  strict: true,
  noEmit: true,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  lib: ['lib.es2023.d.ts'],
  types: ['node'],
  // The dependencies' own declarations are theirs to check; the blocks and the package's are ours.
  skipLibCheck: true,
  noFallthroughCasesInSwitch: true,
  forceConsistentCasingInFileNames: true
}

// One host for every program, caching parsed declaration files: each isolated block then costs
// its type-check, not a fresh parse of Fastify's and Node's types.
const baseHost = ts.createCompilerHost(compilerOptions)
const cache = new Map()
const host = {
  ...baseHost,
  getSourceFile (fileName, languageVersion, onError, shouldCreate) {
    if (fileName.startsWith(outDir)) return baseHost.getSourceFile(fileName, languageVersion, onError, shouldCreate)
    const key = `${fileName}\0${JSON.stringify(languageVersion)}`
    if (!cache.has(key)) cache.set(key, baseHost.getSourceFile(fileName, languageVersion, onError, shouldCreate))
    return cache.get(key)
  }
}

function main () {
  const files = process.argv.length > 2 ? process.argv.slice(2).map((f) => resolve(f)) : markdownFiles()
  if (!existsSync(join(root, 'dist', 'index.d.ts'))) {
    console.error('check-doc-blocks: dist/ is missing: run `npm run build` first (the blocks are checked against the built types)')
    process.exit(2)
  }

  const problems = []
  const modules = []
  let blockCount = 0
  let skipped = 0
  for (const file of files) {
    const { blocks, problems: fileProblems } = extractBlocks(file)
    problems.push(...fileProblems)
    blockCount += blocks.length
    skipped += blocks.filter((b) => b.skip).length
    modules.push(...modulesOf(file, blocks, problems))
  }

  rmSync(outDir, { recursive: true, force: true })
  mkdirSync(outDir, { recursive: true })
  writeFileSync(join(outDir, 'README.md'), 'Written by scripts/check-doc-blocks.mjs from the code blocks of README.md and docs/; not edited by hand.\n')
  for (const module of modules) {
    const name = relative(root, module.file).replace(/[/\\]/g, '__').replace(/\.md$/, '')
    module.path = join(outDir, `${name}.L${module.segments[0].mdLine}.mts`)
    writeFileSync(module.path, module.code + '\n')
  }

  const augmenting = (m) => /^\s*declare\s+(module\s+['"]|global\b)/m.test(m.code)
  const groups = [modules.filter((m) => !augmenting(m)), ...modules.filter(augmenting).map((m) => [m])]
  const byPath = new Map(modules.map((m) => [m.path, m]))
  let errorCount = 0
  for (const group of groups) {
    if (group.length === 0) continue
    const program = ts.createProgram(group.map((m) => m.path), compilerOptions, host)
    const diagnostics = ts.getPreEmitDiagnostics(program)
    for (const d of diagnostics) {
      errorCount++
      const text = ts.flattenDiagnosticMessageText(d.messageText, '\n    ')
      const module = d.file && byPath.get(d.file.fileName)
      if (module) {
        const { line, character } = d.file.getLineAndCharacterOfPosition(d.start ?? 0)
        problems.push(`${relative(root, module.file)}:${markdownLine(module, line + 1)}:${character + 1} TS${d.code}: ${text}`)
      } else {
        problems.push(`${d.file ? relative(root, d.file.fileName) : '(options)'} TS${d.code}: ${text}`)
      }
    }
  }

  const versions = ['fastify', 'knex', 'mysql2', 'typescript', '@types/node'].map((n) => `${n} ${versionOf(n)}`).join(', ')
  const summary = `${blockCount} TypeScript blocks in ${files.length} files (${skipped} skipped, ${modules.length} modules) against ${versions}`
  if (problems.length > 0) {
    const at = (p) => { const m = /^(.*?):(\d+)/.exec(p); return m ? [m[1], Number(m[2])] : [p, 0] }
    problems.sort((a, b) => at(a)[0].localeCompare(at(b)[0]) || at(a)[1] - at(b)[1])
    console.error(problems.join('\n'))
    console.error(`\ncheck-doc-blocks: FAIL: ${errorCount} type errors, ${problems.length - errorCount} other problems; ${summary}`)
    process.exit(1)
  }
  console.log(`check-doc-blocks: pass: ${summary}`)
}

main()
