import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { renderOptionsDoc } from '../scripts/options-doc'

// docs/options.md is generated from the options' description; after changing an option,
// `npm run docs:options` writes it again.

test('docs/options.md is what the description renders (run `npm run docs:options` after changing an option)', () => {
  const written = readFileSync(join(__dirname, '..', 'docs', 'options.md'), 'utf8')
  expect(written).toBe(renderOptionsDoc())
})
