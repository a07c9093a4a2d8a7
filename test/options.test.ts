import Fastify from 'fastify'
import forkSafeDb, { type ForkSafeDbOptions } from '../lib'
import { resolveWorkerOptions, type ForkSafeWorkerOptions } from '../lib/worker/options'

// Every rejection happens at registration (inside register/ready), before any socket opens,
// with a stable code and a message that names the option, the expectation and the value.

const connection = { host: '127.0.0.1', port: 3306, user: 'app', password: 'hunter2-secret', database: 'shop' }

const cases: Array<[title: string, options: unknown, code: string, message: RegExp]> = [
  ['a missing connection', {}, 'FST_FORK_SAFE_DB_INVALID_OPTION', /connection is required/],
  ['a connection that is a number', { connection: 3306 }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection must be a URL .* got `3306` \(number\)/],
  ['a string that is not a URL', { connection: 'app@127.0.0.1:3306/shop' }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /not a valid URL/],
  ['a URL without its scheme', { connection: 'app:hunter2-secret@127.0.0.1/shop' }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /must start with mysql:\/\/ or mariadb:\/\/, got a URL with the scheme app:/],
  ['a URL with another scheme', { connection: 'postgres://app:hunter2-secret@127.0.0.1/shop' }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /got a URL with the scheme postgres:/],
  ['a URL without the slashes after the scheme', { connection: 'mysql:app:hunter2-secret@127.0.0.1/shop' }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /must name a host/],
  ['a URL without a user', { connection: 'mysql://127.0.0.1:3306/shop' }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /must name a user/],
  ['a URL with a bad percent-encoding', { connection: 'mysql://app:%E0%A4%A@127.0.0.1/shop' }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /malformed percent-encoding/],
  ['a URL with a nested path', { connection: 'mysql://app@127.0.0.1/shop/extra' }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /single database name/],
  ['a URL with an unknown query option', { connection: 'mysql://app@127.0.0.1/shop?colour=blue' }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.colour is not a mysql2 connection option/],
  ['a connection object without a host', { connection: { user: 'app' } }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.host must be a non-empty string/],
  ['a connection object without a user', { connection: { host: '127.0.0.1' } }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.user must be a non-empty string, got undefined/],
  ['a port out of range', { connection: { ...connection, port: 70000 } }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.port must be an integer from 1 to 65535, got `70000` \(number\)/],
  ['a password that is not a string', { connection: { ...connection, password: 1234 } }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.password must be a string, got a value of type number/],
  ['an unknown connection key', { connection: { ...connection, hots: 'x' } }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.hots is not a mysql2 connection option/],
  ['mysql2 pool settings in the connection', { connection: { ...connection, connectionLimit: 5 } }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.connectionLimit is not supported: .*set pool\.max instead/],
  ['driver debug output', { connection: { ...connection, debug: true } }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.debug is not supported/],
  ['an invalid timezone', { connection: { ...connection, timezone: 'Europe/Paris' } }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.timezone must be/],
  ['a negative connectTimeout', { connection: { ...connection, connectTimeout: -1 } }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.connectTimeout must be a non-negative integer \(milliseconds\), got `-1` \(number\)/],
  ['multipleStatements without the opt-in', { connection: { ...connection, multipleStatements: true } }, 'FST_FORK_SAFE_DB_UNSAFE_OPTION', /allowUnsafe\.multipleStatements: true/],
  ['multipleStatements in a URL without the opt-in', { connection: 'mysql://app@127.0.0.1/shop?multipleStatements=true' }, 'FST_FORK_SAFE_DB_UNSAFE_OPTION', /connection\.multipleStatements/],
  ['a URL whose unencoded slash puts the password in the path', { connection: 'mysql://app:12345/hunter2-secret@db/shop' }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /must name a user .* got mysql:\/\/app$/],
  ['the MULTI_STATEMENTS flag without the opt-in', { connection: { ...connection, flags: 'FOUND_ROWS, multi_statements' } }, 'FST_FORK_SAFE_DB_UNSAFE_OPTION', /connection\.flags MULTI_STATEMENTS .*allowUnsafe\.multipleStatements/],
  ['the MULTI_STATEMENTS flag in a URL without the opt-in', { connection: 'mysql://app@127.0.0.1/shop?flags=MULTI_STATEMENTS' }, 'FST_FORK_SAFE_DB_UNSAFE_OPTION', /connection\.flags MULTI_STATEMENTS/],
  ['an infileStreamFactory without the opt-in', { connection: { ...connection, infileStreamFactory: () => null } }, 'FST_FORK_SAFE_DB_UNSAFE_OPTION', /connection\.infileStreamFactory .*allowUnsafe\.localInfile/],
  ['the LOCAL_FILES flag without the opt-in', { connection: { ...connection, flags: ['LOCAL_FILES'] } }, 'FST_FORK_SAFE_DB_UNSAFE_OPTION', /connection\.flags LOCAL_FILES/],
  ['TLS that accepts any certificate without the opt-in', { connection: { ...connection, ssl: { rejectUnauthorized: false } } }, 'FST_FORK_SAFE_DB_UNSAFE_OPTION', /rejectUnauthorized: false .*allowUnsafe\.insecureTls/],
  ['TLS that accepts any certificate in a URL without the opt-in', { connection: 'mysql://app@127.0.0.1/shop?ssl={"rejectUnauthorized":false}' }, 'FST_FORK_SAFE_DB_UNSAFE_OPTION', /allowUnsafe\.insecureTls/],
  ['flags that are not strings', { connection: { ...connection, flags: 42 } }, 'FST_FORK_SAFE_DB_INVALID_CONNECTION', /connection\.flags must be a comma-separated string or an array of strings, got `42` \(number\)/],
  ['pool.max below 1', { connection, pool: { max: 0 } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pool\.max must be an integer >= 1, got `0` \(number\)/],
  ['pool.min above pool.max', { connection, pool: { min: 12, max: 10 } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pool\.min must be an integer from 0 to pool\.max \(10\), got `12` \(number\)/],
  ['a fractional pool.min', { connection, pool: { min: 1.5 } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pool\.min must be an integer/],
  ['a non-integer timeout', { connection, pool: { acquireTimeoutMillis: 2.5 } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pool\.acquireTimeoutMillis must be a positive integer \(milliseconds\), got `2\.5` \(number\)/],
  ['a negative lifetime jitter', { connection, pool: { maxConnectionLifetimeJitterMillis: -1 } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pool\.maxConnectionLifetimeJitterMillis must be a non-negative integer \(milliseconds\), got `-1` \(number\)/],
  ['a negative timeout', { connection, pool: { idleTimeoutMillis: -100 } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pool\.idleTimeoutMillis must be a positive integer/],
  ['a timeout given as a string', { connection, pool: { createTimeoutMillis: '1000' } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pool\.createTimeoutMillis .* got `1000` \(string\)/],
  ['a fractional queryTimeoutMillis', { connection, queryTimeoutMillis: 0.5 }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /queryTimeoutMillis must be a non-negative integer \(milliseconds, 0 = off\), got `0\.5` \(number\)/],
  ['a negative maxPendingAcquires', { connection, maxPendingAcquires: -1 }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /maxPendingAcquires must be an integer >= 0, got `-1` \(number\)/],
  ['a zero closeTimeoutMillis', { connection, closeTimeoutMillis: 0 }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /closeTimeoutMillis must be a positive integer \(milliseconds\), got `0` \(number\)/],
  ['a negative pingAfterIdleMillis', { connection, pingAfterIdleMillis: -1 }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pingAfterIdleMillis must be a non-negative integer/],
  ['an unknown pool key', { connection, pool: { maxx: 3 } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pool\.maxx is not a known option/],
  ['a pool.validate that is not a function', { connection, pool: { validate: true } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pool\.validate must be a function, got `true` \(boolean\)/],
  ['pool.propagateCreateError: false', { connection, pool: { propagateCreateError: false } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pool\.propagateCreateError must be true or left out: with false a wrong password/],
  ['a legacy generic-pool option', { connection, pool: { refreshIdle: true } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /pool\.refreshIdle is not supported: it is a generic-pool option tarn/],
  ['a client other than mysql2', { connection, client: 'pg' }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /client must be 'mysql2' .* got `pg` \(string\)/],
  ['an external connectionPool', { connection, connectionPool: {} }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /connectionPool is not supported: an external pool may have been opened before the process forked/],
  ['compileSqlOnError: true', { connection, compileSqlOnError: true }, 'FST_FORK_SAFE_DB_UNSAFE_OPTION', /compileSqlOnError: true puts bound values into error messages/],
  ['a postProcessResponse that is not a function', { connection, postProcessResponse: 'camelCase' }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /postProcessResponse must be a function, got `camelCase` \(string\)/],
  ['a knex log that is not an object of functions', { connection, log: { warn: 'loud' } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /log\.warn must be a function/],
  ['an unknown plugin option', { connection, warmUp: true }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /options\.warmUp is not a known option/],
  ['warmup above pool.max', { connection, pool: { max: 4 }, warmup: 5 }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /warmup must be a boolean or an integer from 0 to pool\.max \(4\), got `5` \(number\)/],
  ['a decorator that is not an identifier', { connection, decorator: 'my db' }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /decorator must be an identifier/],
  ['allowColdStart that is not a boolean', { connection, allowColdStart: 'yes' }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /allowColdStart must be a boolean, got `yes` \(string\)/],
  ['an unknown allowUnsafe key', { connection, allowUnsafe: { everything: true } }, 'FST_FORK_SAFE_DB_INVALID_OPTION', /allowUnsafe\.everything is not a known option/]
]

test.each(cases)('rejects %s with its code at registration', async (_title, options, code, message) => {
  const app = Fastify()
  app.register(forkSafeDb, options as ForkSafeDbOptions)
  const error = await app.ready().then(() => undefined, (error: unknown) => error)
  await app.close()
  expect(error).toMatchObject({ code })
  expect((error as Error).message).toMatch(message)
  expect((error as Error).message).not.toContain('hunter2-secret')
})

test('accepts each dangerous option with its own opt-in', async () => {
  const app = Fastify()
  app.register(forkSafeDb, {
    connection: { ...connection, flags: 'MULTI_STATEMENTS,LOCAL_FILES', infileStreamFactory: () => null, ssl: { rejectUnauthorized: false } } as unknown as ForkSafeDbOptions['connection'],
    allowUnsafe: { multipleStatements: true, localInfile: true, insecureTls: true },
    warmup: false
  })
  await expect(app.ready()).resolves.toBe(app)
  await app.close()
})

test('accepts multipleStatements when allowUnsafe.multipleStatements opts in', async () => {
  const app = Fastify()
  app.register(forkSafeDb, { connection: { ...connection, multipleStatements: true }, allowUnsafe: { multipleStatements: true }, warmup: false })
  await expect(app.ready()).resolves.toBe(app)
  await app.close()
})

test('never mutates the options object it is given', async () => {
  const options = { connection: { ...connection }, pool: { min: 1, max: 3 }, warmup: false }
  const snapshot = structuredClone(options)
  const app = Fastify()
  app.register(forkSafeDb, options)
  await app.ready()
  expect(typeof app.db).toBe('function')
  await app.close()
  expect(options).toEqual(snapshot)
  expect(Object.keys(options.connection)).toContain('password')
})

test('fails a second registration under the same decorator with FST_FORK_SAFE_DB_ALREADY_REGISTERED', async () => {
  const app = Fastify()
  app.register(forkSafeDb, { connection, warmup: false })
  app.register(forkSafeDb, { connection, warmup: false })
  await expect(app.ready()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_ALREADY_REGISTERED', message: /"db" is already registered/ })
  await app.close()
})

test('registers a primary and a replica side by side under different decorators', async () => {
  const app = Fastify()
  app.register(forkSafeDb, { connection, warmup: false })
  app.register(forkSafeDb, { connection: { ...connection, host: '127.0.0.2' }, decorator: 'replica', warmup: false })
  await app.ready()
  const replica = (app as unknown as { replica: typeof app.db }).replica
  expect(replica.client.config.connection.host).toBe('127.0.0.2')
  expect(app.db).not.toBe(replica)
  await app.close()
})

describe('the worker helper\'s options', () => {
  const workerCases: Array<[title: string, options: unknown, message: string]> = [
    ['an unknown option', { drainMilis: 1 }, 'worker option drainMilis is not a known option; expected one of: drainMillis, closeMillis, disconnectMillis, signals, ignoreSignals, warmup'],
    ['a timer beyond what setTimeout takes', { closeMillis: 2 ** 31 }, 'worker option closeMillis must be an integer from 0 to 2147483647, got `2147483648` (number)'],
    ['signals given as one string', { signals: 'SIGTERM' }, 'worker option signals must be an array of signal names such as \'SIGTERM\', got `SIGTERM` (string)'],
    ['a warm-up that is not an object', { warmup: [] }, 'worker option warmup must be { requests: [{ url }], rounds?, concurrency?, maxMillis? }, got an array'],
    ['a warm-up without its requests', { warmup: { rounds: 2 } }, 'worker option warmup.requests is required: an array of requests such as { url: \'/\' }'],
    ['a warm-up request that is not a path', { warmup: { requests: [{ url: '/' }, { url: 'http://x/' }] } }, 'worker option warmup.requests[1].url must be a path starting with /, got `http://x/` (string)'],
    ['a warm-up request with an unknown method', { warmup: { requests: [{ url: '/', method: 'GOT' }] } }, 'worker option warmup.requests[0].method must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, got `GOT` (string)'],
    ['too many warm-up rounds', { warmup: { requests: [], rounds: 10_001 } }, 'worker option warmup.rounds must be an integer from 1 to 10000, got `10001` (number)'],
    ['an unknown warm-up key', { warmup: { requests: [], round: 3 } }, 'worker option warmup.round is not a known option; expected one of: requests, rounds, concurrency, maxMillis']
  ]

  test.each(workerCases)('rejects %s with a message that names it', (_title, options, message) => {
    expect(() => resolveWorkerOptions(options as ForkSafeWorkerOptions, false)).toThrow(expect.objectContaining({ code: 'FST_FORK_SAFE_DB_INVALID_OPTION', message: `fastify-fork-safe-db: ${message}` }))
  })

  test('fills the defaults, and ignores SIGHUP only in a cluster worker', () => {
    const defaults = { drainMillis: 5000, closeMillis: 10_000, disconnectMillis: 5000, signals: ['SIGINT', 'SIGTERM'], warmup: { requests: [], rounds: 20, concurrency: 2, maxMillis: 3000 } }
    expect(resolveWorkerOptions(undefined, true)).toEqual({ ...defaults, ignoreSignals: ['SIGHUP'] })
    expect(resolveWorkerOptions({}, false)).toEqual({ ...defaults, ignoreSignals: [] })
  })

  test('copies the lists and requests it is given, so later changes to them change nothing', () => {
    const options = { signals: ['SIGTERM'] as NodeJS.Signals[], warmup: { requests: [{ url: '/' }] } }
    const resolved = resolveWorkerOptions(options, false)
    options.signals.push('SIGINT')
    options.warmup.requests[0].url = '/changed'
    expect(resolved.signals).toEqual(['SIGTERM'])
    expect(resolved.warmup.requests).toEqual([{ url: '/' }])
  })
})
