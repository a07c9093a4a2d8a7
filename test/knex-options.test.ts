import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import type { FastifyInstance } from 'fastify'
import knex, { type Knex } from 'knex'
import forkSafeDb, { FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT, FST_FORK_SAFE_DB_QUERY_TIMEOUT, type ForkSafeDbOptions } from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// An existing knex configuration moves over unchanged: knex's own options, under knex's own
// names, behave as they do in stock knex, on fastify.db, on request.db and inside transactions.

const fixture = perTestUser({ ownDatabase: true })

let logged: LoggedApp
let app: FastifyInstance | undefined

afterEach(async () => {
  await app?.close()
  app = undefined
})

async function register (options: Partial<ForkSafeDbOptions> = {}): Promise<FastifyInstance> {
  logged = buildApp()
  app = logged.app
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 2 }, ...options })
  return app
}

const camelCase = (key: string) => key.replace(/_([a-z])/g, (_match, letter: string) => letter.toUpperCase())
const snakeCase = (key: string) => key.replace(/[A-Z]/g, (letter) => `_${letter.toLowerCase()}`)

function camelRows (result: unknown): unknown {
  if (Array.isArray(result)) return result.map(camelRows)
  if (result === null || typeof result !== 'object') return result
  return Object.fromEntries(Object.entries(result).map(([key, value]) => [camelCase(key), value]))
}

/** Runs `work` on fastify.db, on request.db in a handler, and on a request.db transaction. */
async function everywhere (instance: FastifyInstance, work: (db: Knex) => Promise<unknown>): Promise<unknown[]> {
  instance.get('/work', async (request) => ({ result: await work(request.db) }))
  instance.get('/work-in-transaction', async (request) => ({ result: await request.db.transaction(async (trx) => work(trx)) }))
  instance.get('/work-in-route', { db: { transaction: true } }, async (request) => ({ result: await work(request.db) }))
  await instance.ready()
  return [
    await work(instance.db),
    (await instance.inject('/work')).json<{ result: unknown }>().result,
    (await instance.inject('/work-in-transaction')).json<{ result: unknown }>().result,
    (await instance.inject('/work-in-route')).json<{ result: unknown }>().result
  ]
}

async function createPeople (): Promise<void> {
  await fixture.database.admin.query(`CREATE TABLE \`${fixture.user.user}\`.people (person_id INT PRIMARY KEY, first_name VARCHAR(40), nick VARCHAR(40) DEFAULT 'none')`)
  await fixture.database.admin.query(`INSERT INTO \`${fixture.user.user}\`.people (person_id, first_name) VALUES (1, 'Ada')`)
}

test('postProcessResponse and wrapIdentifier (camelCase in, snake_case out) work everywhere', async () => {
  const instance = await register({
    postProcessResponse: (result) => camelRows(result),
    wrapIdentifier: (value, origImpl) => origImpl(snakeCase(value))
  })
  await createPeople()
  const results = await everywhere(instance, async (db) => db('people').select('personId', 'firstName').where({ personId: 1 }).first())
  expect(results).toEqual(Array(4).fill({ personId: 1, firstName: 'Ada' }))
})

test('useNullAsDefault fills a multi-row insert\'s missing columns with NULL, not DEFAULT', async () => {
  const instance = await register({ useNullAsDefault: true })
  await createPeople()
  let next = 10
  const results = await everywhere(instance, async (db) => {
    const ids = [next++, next++]
    await db('people').insert([{ person_id: ids[0], first_name: 'Grace' }, { person_id: ids[1], first_name: 'Linus', nick: 'l' }])
    return db('people').where({ person_id: ids[0] }).first('nick')
  })
  expect(results).toEqual(Array(4).fill({ nick: null }))
})

test('asyncStackTraces points a failed query\'s stack at the code that built it', async () => {
  const instance = await register({ asyncStackTraces: true })
  await instance.ready()
  async function theCallerThatBuiltTheQuery (db: Knex): Promise<unknown> {
    return db('no_such_table').select('*')
  }
  const error = await theCallerThatBuiltTheQuery(instance.db).catch((caught: unknown) => caught) as Error
  expect(error).toMatchObject({ code: 'ER_NO_SUCH_TABLE' })
  expect(error.stack).toContain('theCallerThatBuiltTheQuery')
})

test('userParams and version reach knex', async () => {
  const instance = await register({ userParams: { tenant: 'acme' }, version: '10.11.0' })
  await instance.ready()
  expect(instance.db.userParams).toEqual({ tenant: 'acme' })
  expect(instance.db.client.version).toBe('10.11.0')
})

describe('mysql2\'s prepared-statement cache', () => {
  // Read off a pool connection: mysql2 sizes each connection's cache from its settings.
  async function cacheSize (instance: FastifyInstance): Promise<unknown> {
    const connection = await instance.db.client.acquireConnection()
    try {
      return connection.config.maxPreparedStatements
    } finally {
      await instance.db.client.releaseConnection(connection)
    }
  }

  test('is kept small, since knex never prepares a statement', async () => {
    expect(await cacheSize(await register())).toBe(16)
  })

  test('takes the size the user sets', async () => {
    const url = new URL(fixture.user.url)
    const connection = { host: url.hostname, port: Number(url.port), user: decodeURIComponent(url.username), password: decodeURIComponent(url.password), database: url.pathname.slice(1), maxPreparedStatements: 500 }
    expect(await cacheSize(await register({ connection }))).toBe(500)
  })
})

describe('migrations and seeds', () => {
  let directory: string
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), 'fork-safe-db-migrations-'))
    await mkdir(join(directory, 'migrations'))
    await mkdir(join(directory, 'seeds'))
    await writeFile(join(directory, 'migrations', '20260101000000_create_planets.js'), `
      exports.up = (knex) => knex.schema.createTable('planets', (table) => { table.string('name').primary() })
      exports.down = (knex) => knex.schema.dropTable('planets')
    `)
    await writeFile(join(directory, 'seeds', 'planets.js'), `
      exports.seed = async (knex) => { await knex('planets').del(); await knex('planets').insert([{ name: 'Mercury' }, { name: 'Venus' }]) }
    `)
  })
  afterEach(async () => { await rm(directory, { recursive: true, force: true }) })

  test('run with knex\'s own options (a custom migrations table)', async () => {
    const instance = await register({
      migrations: { directory: join(directory, 'migrations'), tableName: 'custom_migrations', loadExtensions: ['.js'] },
      seeds: { directory: join(directory, 'seeds'), loadExtensions: ['.js'] }
    })
    await instance.ready()
    const [, applied] = await instance.db.migrate.latest() as [number, string[]]
    expect(applied).toEqual(['20260101000000_create_planets.js'])
    await instance.db.seed.run()
    expect(await instance.db('planets').orderBy('name').pluck('name')).toEqual(['Mercury', 'Venus'])
    expect(await instance.db('custom_migrations').pluck('name')).toEqual(['20260101000000_create_planets.js'])
  })
})

describe('pool.afterCreate', () => {
  test('sets up every connection\'s session, after the plugin\'s own set-up', async () => {
    const seenConfigs: string[] = []
    const instance = await register({
      pool: {
        min: 2,
        max: 2,
        afterCreate: (connection, done) => {
          // The plugin's set-up ran first: the connection's password is already hidden.
          seenConfigs.push(inspect((connection as { config: object }).config))
          ;(connection as { query: (sql: string, callback: (error: Error | null) => void) => void }).query("SET time_zone = '+03:00'", (error) => done(error, connection))
        }
      }
    })
    const results = await everywhere(instance, async (db) => (await db.raw('SELECT @@session.time_zone AS zone'))[0][0].zone)
    expect(results).toEqual(Array(4).fill('+03:00'))
    expect(seenConfigs).toHaveLength(2)
    for (const config of seenConfigs) expect(config).not.toContain(fixture.user.password)
  })

  test('closes the connection when it fails (stock knex leaves it open)', async () => {
    const instance = await register({ pool: { min: 1, max: 1, afterCreate: (_connection, done) => done(new Error('session set-up failed')) } })
    await expect(instance.ready()).rejects.toMatchObject({ code: 'FST_FORK_SAFE_DB_WARMUP_FAILED', cause: expect.objectContaining({ message: 'session set-up failed' }) })
    expect(await fixture.database.settledCount(fixture.user.user, 0)).toBe(0)
  })
})

describe('connection as a function', () => {
  test('is called for the settings of new connections, sync or async', async () => {
    let calls = 0
    const instance = await register({ connection: () => { calls += 1; return fixture.user.connection } })
    await instance.ready()
    expect(calls).toBeGreaterThan(0)
    await instance.close()
    app = undefined
    const asyncInstance = await register({ connection: async () => fixture.user.url })
    await asyncInstance.ready()
    expect((await asyncInstance.db.raw('SELECT 1 AS one'))[0]).toEqual([{ one: 1 }])
  })

  test('has each result checked like a static connection, failing ready() with a coded error', async () => {
    const instance = await register({ connection: () => ({ ...fixture.user.connection, multipleStatements: true }) })
    await expect(instance.ready()).rejects.toMatchObject({
      code: 'FST_FORK_SAFE_DB_WARMUP_FAILED',
      cause: expect.objectContaining({ code: 'FST_FORK_SAFE_DB_UNSAFE_OPTION' })
    })
  })

  test('rotates credentials: after ALTER USER, new connections use the password it returns', async () => {
    const { user } = fixture.user
    let password = fixture.user.password
    // Like a token's expiry: each result's checker belongs to that result.
    let generation = 0
    const provided: string[] = []
    const instance = await register({
      pool: { min: 1, max: 2 },
      connection: async () => {
        const issued = generation
        provided.push(password)
        return { ...fixture.user.connection, password, expirationChecker: () => generation !== issued }
      }
    })
    instance.get('/sleep', async (request) => request.db.raw('SELECT SLEEP(0.3) AS rotated'))
    await instance.ready()
    const rotated = `${fixture.user.password}-rotated`
    await fixture.database.admin.query('ALTER USER ?@\'%\' IDENTIFIED BY ?', [user, rotated])
    password = rotated
    generation += 1
    // Two at once: the second needs a connection opened with the new password.
    const responses = await Promise.all([instance.inject('/sleep'), instance.inject('/sleep')])
    expect(responses.map((response) => response.statusCode)).toEqual([200, 200])
    expect(provided).toContain(rotated)
    // The rotated password is scrubbed like the first one.
    expect(logged.text()).not.toContain(rotated)
  })
})

describe('knex\'s log and debug options', () => {
  test('log receives knex\'s warnings (scrubbed); levels it leaves out go to the Fastify logger', async () => {
    const warnings: string[] = []
    const instance = await register({ debug: true, log: { warn: (message: string) => { warnings.push(message) } } })
    await instance.ready()
    // knex warns about a query builder made without a table.
    ;(instance.db as unknown as () => unknown)()
    expect(warnings.some((message) => message.includes('calling knex without a tableName is deprecated'))).toBe(true)
    expect(logged.lines().some((line) => line.source === 'knex' && String(line.msg).includes('tableName'))).toBe(false)
    // No debug handler of its own: knex's debug lines reach the Fastify logger.
    await instance.db.raw('SELECT 1 AS debugged')
    expect(logged.lines().some((line) => line.level === 20 && line.source === 'knex' && String(line.msg).includes('debugged'))).toBe(true)
  })

  test('debug logs each statement at debug level, without its bound values', async () => {
    const instance = await register({ debug: true })
    await instance.ready()
    await instance.db.raw('SELECT ? AS secret_value', ['debug-s3cr3t-value'])
    expect(logged.lines().some((line) => line.level === 20 && line.source === 'knex' && String(line.msg).includes('SELECT ? AS secret_value'))).toBe(true)
    expect(logged.text()).not.toContain('debug-s3cr3t-value')
  })
})

describe('timeouts keep knex\'s class', () => {
  test('an acquire timeout is a KnexTimeoutError with the plugin\'s code, and honours acquireConnectionTimeout', async () => {
    const instance = await register({ pool: { min: 1, max: 1 }, acquireConnectionTimeout: 300 })
    await instance.ready()
    const held = await instance.db.transaction()
    try {
      const error = await instance.db.raw('SELECT 1').catch((caught: unknown) => caught)
      expect(error).toBeInstanceOf(knex.KnexTimeoutError)
      expect(error).toBeInstanceOf(FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT)
      expect(error).toMatchObject({ code: 'FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT', message: expect.stringContaining('within 300 ms') })
    } finally {
      await held.rollback()
    }
  })

  test('a query timeout is a KnexTimeoutError with the plugin\'s code, inside a transaction too', async () => {
    const instance = await register({ queryTimeoutMillis: 100 })
    await instance.ready()
    const outside = await instance.db.raw('SELECT SLEEP(2)').catch((caught: unknown) => caught)
    const inside = await instance.db.transaction(async (trx) => trx.raw('SELECT SLEEP(2)')).catch((caught: unknown) => caught)
    for (const error of [outside, inside]) {
      expect(error).toBeInstanceOf(knex.KnexTimeoutError)
      expect(error).toBeInstanceOf(FST_FORK_SAFE_DB_QUERY_TIMEOUT)
      expect(error).toMatchObject({ code: 'FST_FORK_SAFE_DB_QUERY_TIMEOUT', timeout: 100 })
    }
  })
})
