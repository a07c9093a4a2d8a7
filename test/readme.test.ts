import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { DEFAULTS, KNEX_KEYS, KNEX_POOL_KEYS, PLUGIN_KEYS, POOL_KEYS } from '../lib/options/resolve-options'

// The README's option reference must name exactly the options the code accepts.
const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8')
const optionsSection = readme.slice(readme.indexOf('## Options'), readme.indexOf('## Errors'))

test('documents every plugin option under its own heading, and no other', () => {
  const headings = [...optionsSection.matchAll(/^#### (\w+)$/gm)].map((match) => match[1])
  expect(headings.sort()).toEqual([...PLUGIN_KEYS].sort())
})

test('gives every option a Type line, and a Default line unless it is required', () => {
  for (const key of PLUGIN_KEYS) {
    const section = optionsSection.slice(optionsSection.indexOf(`#### ${key}\n`)).split('\n#### ')[0]
    expect(section).toMatch(/^Type: /m)
    if (key !== 'connection') expect(section).toMatch(/^Default: /m)
  }
})

test('names every pool setting the code accepts, with the code\'s defaults', () => {
  for (const key of POOL_KEYS) expect(optionsSection).toContain(`\`${key}\``)
  expect(optionsSection).toContain(`{ min: ${DEFAULTS.pool.min}, max: ${DEFAULTS.pool.max}, acquireTimeoutMillis: ${DEFAULTS.pool.acquireTimeoutMillis} }`)
  expect(optionsSection).toContain(`Default: \`${DEFAULTS.checkAfterIdleMillis}\``)
  expect(optionsSection).toContain(`Default: \`${DEFAULTS.pingAfterIdleMillis}\``)
})

test('names every knex option the plugin takes, and every knex pool hook, in the Options section', () => {
  const knexSection = optionsSection.slice(optionsSection.indexOf('### knex\'s own options'))
  for (const key of KNEX_KEYS) expect(knexSection).toContain(`\`${key}\``)
  for (const key of KNEX_POOL_KEYS) expect(optionsSection).toContain(`\`${key}`)
})
