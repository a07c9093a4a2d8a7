import Fastify from 'fastify'
import forkSafeDbDefault, { forkSafeDb, FST_FORK_SAFE_DB_INVALID_OPTION } from '../lib'

// The package entry as it ships (dist/, built by `npm test` before jest runs).
const shipped = require('..')

test('require() of the package returns the plugin with default and named exports attached', () => {
  expect(typeof shipped).toBe('function')
  expect(shipped.default).toBe(shipped)
  expect(shipped.forkSafeDb).toBe(shipped)
  expect(shipped.FST_FORK_SAFE_DB_INVALID_OPTION).toBeDefined()
})

test('the default and named exports are the same plugin, named for fastify-plugin', () => {
  expect(forkSafeDbDefault).toBe(forkSafeDb)
  expect((forkSafeDb as unknown as Record<symbol, unknown>)[Symbol.for('fastify.display-name')]).toBe('fastify-fork-safe-db')
  expect((forkSafeDb as unknown as Record<symbol, unknown>)[Symbol.for('plugin-meta')]).toMatchObject({ name: 'fastify-fork-safe-db', fastify: '5.x' })
})

test('the shipped plugin registers and rejects bad options with an exported error class', async () => {
  const app = Fastify()
  app.register(shipped, { connection: 'mysql://app@127.0.0.1/shop', pool: { max: 0 } })
  const error = await app.ready().then(() => undefined, (error: unknown) => error)
  await app.close()
  expect(error).toBeInstanceOf(shipped.FST_FORK_SAFE_DB_INVALID_OPTION)
  expect(error).toBeInstanceOf(FST_FORK_SAFE_DB_INVALID_OPTION)
})

test('fastify-fork-safe-db/cluster ships startCluster and requestRecycle, and the main entry its error class', () => {
  const cluster = require('../dist/cluster')
  expect(Object.keys(cluster).sort()).toEqual(['requestRecycle', 'startCluster'])
  expect(shipped.FST_FORK_SAFE_DB_CLUSTER_NOT_PRIMARY).toBeDefined()
  expect(new shipped.FST_FORK_SAFE_DB_CLUSTER_NOT_PRIMARY('twice').code).toBe('FST_FORK_SAFE_DB_CLUSTER_NOT_PRIMARY')
})
