import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { BUDGET_OPTIONS, PLUGIN_OPTIONS, POOL_OPTIONS, WORKER_OPTIONS } from '../lib/options/descriptions'
import type { OptionTable } from '../lib/options/validate'
import { renderOptionsDoc } from '../scripts/options-doc'

// docs/options.md is generated from the options' description; after changing an option,
// `npm run docs:options` writes it again.

test('docs/options.md is what the description renders (run `npm run docs:options` after changing an option)', () => {
  const written = readFileSync(join(__dirname, '..', 'docs', 'options.md'), 'utf8')
  expect(written).toBe(renderOptionsDoc())
})

// Editors show the public types' JSDoc, not docs/options.md: where it names a default, it must be the description's.
const jsdoc = (file: string, name: string): Map<string, string> => {
  const text = readFileSync(join(__dirname, '..', 'lib', file), 'utf8')
  const start = text.indexOf(`interface ${name} `)
  const body = text.slice(start, text.indexOf('\n}', start))
  return new Map([...body.matchAll(/\/\*\* (.+?) \*\/\n\s+(\w+)\??:/g)].map((match) => [match[2], match[1]]))
}

test.each([
  ['ForkSafeDbOptions', jsdoc('options/types.ts', 'ForkSafeDbOptions'), PLUGIN_OPTIONS],
  ['ForkSafeDbPoolOptions', jsdoc('options/types.ts', 'ForkSafeDbPoolOptions'), POOL_OPTIONS],
  ['ConnectionBudgetOptions', jsdoc('options/budget.ts', 'ConnectionBudgetOptions'), BUDGET_OPTIONS],
  ['ForkSafeWorkerOptions', jsdoc('worker/options.ts', 'ForkSafeWorkerOptions'), WORKER_OPTIONS]
] as Array<[string, Map<string, string>, OptionTable]>)('the JSDoc of %s names the description\'s defaults', (_name, docs, table) => {
  for (const [key, spec] of Object.entries(table)) {
    const doc = docs.get(key)
    if (doc === undefined || !/Default [^:]/.test(doc) || !['number', 'boolean', 'string'].includes(typeof spec.default)) continue
    expect({ key, doc }).toEqual({ key, doc: expect.stringMatching(new RegExp(`Default [\`']?${String(spec.default)}\\b`)) })
  }
})
