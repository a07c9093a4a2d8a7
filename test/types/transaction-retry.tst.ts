import Fastify from 'fastify'
import type { Knex } from 'knex'
import { expect, test } from 'tstyche'
import forkSafeDb from '../../lib'

// `retries` is a field of knex's own TransactionConfig, merged by the plugin's declarations: the
// call keeps knex's shape and its result type.

const app = Fastify()
app.register(forkSafeDb, { connection: 'mysql://app@127.0.0.1:3306/shop' })

test('fastify.db.transaction takes { retries } with a callback and keeps the callback\'s result type', () => {
  expect(app.db.transaction(async () => 42, { retries: 3 })).type.toBe<Promise<number>>()
})

test('request.db.transaction takes { retries } too', () => {
  app.get('/', async (request) => {
    expect(request.db.transaction(async () => 'done', { retries: 1, isolationLevel: 'serializable' })).type.toBe<Promise<string>>()
    return null
  })
})

test('knex\'s own TransactionConfig, imported as users import it, has retries as an optional number', () => {
  const config: Knex.TransactionConfig = { retries: 2 }
  expect(config.retries).type.toBe<number | undefined>()
  expect<Knex.TransactionConfig>().type.not.toBeAssignableFrom({ retries: '3' })
})
