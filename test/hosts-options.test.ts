import Fastify from 'fastify'
import forkSafeDb from '../lib'
import { resolveOptions } from '../lib/options/resolve-options'

// Several hosts in one registration: a list, or a URL with several hosts, each checked like one
// host; bad input is refused at registration with a code, and never with the password in it.

const PASSWORD = 'hunter2-secret'
const one = { host: '127.0.0.1', port: 3306, user: 'app', password: PASSWORD, database: 'shop' }

const refused: Array<[title: string, connection: unknown, code: string, message: RegExp]> = [
  ['an empty list', [], 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /non-empty list of them, got an empty array/],
  ['a connection function inside a list', [one, () => one], 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\[1\] must be a URL or a mysql2 connection object \(a connection function stays one host, given alone\), got a function/],
  ['a list inside a list', [one, [one]], 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\[1\] must be .*got an array/],
  ['a list entry that is a number', [one, 3306], 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\[1\] must be a URL .* got `3306` \(number\)/],
  ['a list entry with a bad port', [one, { ...one, port: 70000 }], 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.port must be an integer from 1 to 65535, got `70000` \(number\)/],
  ['the same host twice in a list', [one, { ...one, user: 'other' }], 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection must list each host once, got 127\.0\.0\.1:3306 twice/],
  ['the same host twice in a URL', `mysql://app:${PASSWORD}@127.0.0.1:3306,127.0.0.1/shop`, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /got 127\.0\.0\.1:3306 twice/],
  ['a URL with an empty host between commas', `mysql://app:${PASSWORD}@h1:3306,,h2:3307/shop`, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /must list hosts separated by single commas .* got the host list `h1:3306,,h2:3307`/],
  ['a URL with several hosts and a bad port', `mysql://app:${PASSWORD}@h1:3306,h2:99999/shop`, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /not a valid URL/],
  ['a URL with several hosts and an unknown query option', `mysql://app:${PASSWORD}@h1,h2/shop?colour=blue`, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.colour is not a mysql2 connection option/]
]

test.each(refused)('refuses %s with its code at registration, without the password', async (_title, connection, code, message) => {
  const app = Fastify()
  app.register(forkSafeDb, { connection } as never)
  const error = await app.ready().then(() => undefined, (failure: unknown) => failure as Error & { code: string })
  await app.close()
  expect(error?.code).toBe(code)
  expect(error?.message).toMatch(message)
  expect(error?.message).not.toContain(PASSWORD)
})

test.each([
  ['a host policy that is not one of the two', { hostPolicy: 'round-robin' }, /hostPolicy must be 'sequential' or 'random', got `round-robin` \(string\)/],
  ['a role that is not one of the two', { role: 'writer' }, /role must be 'primary' or 'any', got `writer` \(string\)/]
])('refuses %s with FST_FORK_SAFE_DB_INVALID_OPTION', (_title, options, message) => {
  expect(() => resolveOptions({ connection: one, ...options })).toThrow(expect.objectContaining({ code: 'FST_FORK_SAFE_DB_INVALID_OPTION', message: expect.stringMatching(message) }))
})

test('reads a URL with several hosts as the list of its hosts, each with the same credentials, database and query', () => {
  const fromUrl = resolveOptions({ connection: `mysql://app:${PASSWORD}@h1:3306,h2:3307,[::1]:3308/shop?connectTimeout=2000` }).connection
  const fromList = resolveOptions({
    connection: [
      `mysql://app:${PASSWORD}@h1:3306/shop?connectTimeout=2000`,
      { host: 'h2', port: 3307, user: 'app', password: PASSWORD, database: 'shop', connectTimeout: 2000 },
      { host: '::1', port: 3308, user: 'app', password: PASSWORD, database: 'shop', connectTimeout: 2000 }
    ]
  }).connection
  expect(fromUrl.hosts.map((host) => host.label)).toEqual(['h1:3306', 'h2:3307', '[::1]:3308'])
  expect(fromList.hosts.map((host) => host.label)).toEqual(fromUrl.hosts.map((host) => host.label))
  for (const [index, host] of fromUrl.hosts.entries()) {
    expect(host.settings).toEqual(fromList.hosts[index].settings)
    expect(host.settings?.password).toBe(PASSWORD)
  }
  expect(fromUrl.description).toBe('app@h1:3306/shop, app@h2:3307/shop, app@::1:3308/shop')
  expect(fromUrl.description).toBe(fromList.description)
})

test('gives knex the first host\'s settings, and each host its own user and database', () => {
  const { connection } = resolveOptions({ connection: [one, { host: '127.0.0.2', user: 'reader', database: 'shop_copy' }] })
  expect(connection.knex).toMatchObject({ host: '127.0.0.1', user: 'app', database: 'shop' })
  expect(connection.hosts[1].settings).toMatchObject({ host: '127.0.0.2', user: 'reader', database: 'shop_copy' })
  expect(connection.hosts.map((host) => host.label)).toEqual(['127.0.0.1:3306', '127.0.0.2:3306'])
})

test('keeps a one-host connection exactly as before: its settings, description and one host', () => {
  const { connection } = resolveOptions({ connection: one })
  expect(connection.description).toBe('app@127.0.0.1:3306/shop')
  expect(connection.hosts).toHaveLength(1)
  expect(connection.hosts[0].label).toBe('127.0.0.1:3306')
  expect(connection.hosts[0].settings).toEqual(connection.knex)
})

test('defaults to the sequential policy and any role', () => {
  const options = resolveOptions({ connection: one })
  expect([options.hostPolicy, options.role]).toEqual(['sequential', 'any'])
})

test('adds every host\'s password, and the URL itself, to the secrets scrubbed from logs', () => {
  const url = 'mysql://app:first-secret@h1,h2/shop'
  const { secrets } = resolveOptions({ connection: [url, { ...one, password: 'second-secret' }] })
  expect(secrets).toEqual(expect.arrayContaining(['first-secret', 'second-secret']))
  expect(resolveOptions({ connection: url }).secrets).toEqual(expect.arrayContaining([url, 'first-secret']))
})

test('fails a connection function whose result is a list with FST_FORK_SAFE_DB_INVALID_CONNECTION', async () => {
  const { connection } = resolveOptions({ connection: () => [one, one] as never })
  const knexSettings = connection.knex as () => Promise<unknown>
  await expect(knexSettings()).rejects.toMatchObject({
    code: 'FST_FORK_SAFE_DB_INVALID_CONNECTION',
    message: expect.stringMatching(/a connection function stays one host; list several hosts in connection itself\), got an array/)
  })
})
