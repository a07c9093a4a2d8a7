import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import * as entry from '../lib/index'
import { resolveOptions } from '../lib/options/resolve-options'

// The README and docs/ must say what the code does: the error codes it names are the ones the
// package exports, the options it shows are accepted and their stated defaults are the code's,
// and every link between the documents lands on a file and a heading that exist. The full
// option reference (docs/options.md) is generated from the code and tested where it is made;
// the TypeScript blocks are type-checked by `npm run test:docs`.

const ROOT = join(__dirname, '..')
const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')

/** The text of a `## ` section of the README, up to the next `## ` heading. */
function section (title: string): string {
  const start = readme.indexOf(`\n## ${title}\n`)
  if (start === -1) throw new Error(`no "## ${title}" section in the README`)
  const end = readme.indexOf('\n## ', start + 1)
  return readme.slice(start, end === -1 ? undefined : end)
}

test('stays a read of one sitting: at most 450 lines', () => {
  expect(readme.split('\n').length).toBeLessThanOrEqual(450)
})

test('the table of error codes names exactly the constructors the package exports', () => {
  const documented = [...section('Errors').matchAll(/^\| `(FST_FORK_SAFE_DB_\w+)` \|/gm)].map((match) => match[1])
  const exported = Object.keys(entry).filter((name) => name.startsWith('FST_FORK_SAFE_DB_'))
  expect([...documented].sort()).toEqual([...exported].sort())
  expect(new Set(documented).size).toBe(documented.length)
  for (const name of exported) expect(new (entry as unknown as Record<string, new () => { code: string }>)[name]().code).toBe(name)
})

test('the options shown under Options are accepted, and are the defaults the code applies', () => {
  const block = /```ts\n([\s\S]*?)```/.exec(section('Options'))?.[1]
  const literal = block === undefined ? null : /register\(forkSafeDb, (\{[\s\S]*?\n\})\)/.exec(block)?.[1]
  if (literal == null) throw new Error('no `app.register(forkSafeDb, { … })` block under "## Options"')
  // The block is code a user pastes; evaluating its object literal reads the options as they wrote them.
  // eslint-disable-next-line no-new-func
  const shown = new Function('process', `return (${literal})`)({ env: {} }) as Record<string, unknown>
  expect(Object.keys(shown).length).toBeGreaterThan(4)
  expect(resolveOptions(shown)).toEqual(resolveOptions({ connection: shown.connection }))
})

/** README.md and every Markdown file under docs/, relative to the repository. */
function documents (): string[] {
  const found = ['README.md']
  const walk = (dir: string): void => {
    if (!existsSync(join(ROOT, dir))) return
    for (const item of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
      const path = join(dir, item.name)
      if (item.isDirectory()) walk(path)
      else if (item.name.endsWith('.md')) found.push(path)
    }
  }
  walk('docs')
  return found
}

/** GitHub's anchors for a Markdown file's headings (lower case, punctuation dropped, spaces to hyphens, repeats numbered). */
function anchors (file: string): Set<string> {
  const text = readFileSync(file, 'utf8').replace(/^ {0,3}(```|~~~)[\s\S]*?^ {0,3}\1[^\n]*$/gm, '')
  const seen = new Map<string, number>()
  const result = new Set<string>()
  for (const [, heading] of text.matchAll(/^#{1,6} +(.+?) *#*$/gm)) {
    const base = heading.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
    const count = seen.get(base) ?? 0
    seen.set(base, count + 1)
    result.add(count === 0 ? base : `${base}-${count}`)
  }
  return result
}

test.each(documents())('every relative link of %s lands on a file, and on a heading there', (document) => {
  const text = readFileSync(join(ROOT, document), 'utf8')
    .replace(/^ {0,3}(```|~~~)[\s\S]*?^ {0,3}\1[^\n]*$/gm, '')
    .replace(/`[^`\n]*`/g, '')
  const broken: string[] = []
  for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    if (/^[a-z]+:/i.test(target)) continue
    const [path, anchor] = target.split('#')
    const file = path === '' ? join(ROOT, document) : resolve(ROOT, dirname(document), path)
    const name = relative(ROOT, file)
    if (!existsSync(file)) {
      broken.push(`${target}: no file ${name}`)
      continue
    }
    if (anchor !== undefined && name.endsWith('.md') && !anchors(file).has(anchor)) broken.push(`${target}: no heading #${anchor} in ${name}`)
  }
  expect(broken).toEqual([])
})
