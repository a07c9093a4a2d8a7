// The one description of every option, the plugin's and the worker helper's: what each accepts,
// its default and its doc line. validate.ts reads options against it (the messages), and
// scripts/options-doc.ts renders docs/options.md from it (test/options-doc.test.ts fails when
// that file is stale).
//
// Why our own table and not a JSON Schema compiled by ajv, as Fastify does for its own options:
// - The messages. ajv says `must be <= 10` at `/pool/min`: no value that arrived, no name for the
//   bound (`pool.max (10)`), and for `boolean | number` three errors (one per branch, then "must
//   match a schema in anyOf") that we would have to merge back into one sentence. ajv-errors
//   writes custom messages, but it is one more dependency, and we would still write each message
//   by hand, per keyword, to match our wording.
// - What JSON Schema cannot say: functions (knex's hooks, postProcessResponse, a connection
//   function), "null is left out" for only some of knex's keys, keys read by name even when not
//   enumerable (a hidden password), defaults computed from other options (4 x pool.max, 10% of
//   the lifetime, the smaller of two acquire timeouts), and the UNSAFE_OPTION code for some keys.
//   Each would be a custom keyword, i.e. our code again, inside ajv's.
// - ajv is only a dependency of fastify's, not ours (fastify 5 brings ajv 8, eslint ajv 6), and
//   `useDefaults` writes the defaults into the object it checks (the caller's, unless copied).
// A table of plain specs read by a 150-line interpreter keeps today's messages word for word,
// and the docs come from the same `expected` wording as the errors.

import { FST_FORK_SAFE_DB_UNSAFE_OPTION } from '../errors'
import { workersFromEnvironment } from './budget'
import { describeValue, isPlainObject, type OptionSpec, type OptionTable, type Scope } from './validate'

const milliseconds = (min: 0 | 1, note?: string) => ({ kind: 'integer', min, milliseconds: true, note } as const)
const IDENTIFIER = /^[A-Za-z_$][\w$]*$/
const MAX_TIMER_MILLIS = 2 ** 31 - 1
const GENERIC_POOL = 'it is a generic-pool option tarn (knex\'s pool) does not take'

/** An OpenTelemetry meter provider, told by its one method the plugin calls. */
const isMeterProvider = (value: unknown): boolean =>
  typeof value === 'object' && value !== null && typeof (value as { getMeter?: unknown }).getMeter === 'function'

/** A key knex's types list but the plugin refuses whenever it is set: why, for the message and the docs. */
const refuse = (why: string, nullIsUnset = false): OptionSpec => ({ type: '', doc: '', rule: { kind: 'object' }, refused: why, nullIsUnset })

/** The pool's size once read: its bounds depend on it. */
const poolOf = (scope: Scope) => scope.get('pool') as { min: number, max: number }

export const POOL_OPTIONS = {
  min: {
    type: 'number',
    doc: 'Connections kept open while idle, and opened by warm-up.',
    rule: { kind: 'integer', min: 0, max: { option: 'pool.max', of: (scope) => scope.get('max') as number } },
    // `{ max: 1 }` alone means a pool of one, not an error about the default min.
    defaultFrom: (scope) => Math.min(2, scope.get('max') as number),
    defaultText: '`2`, or `pool.max` if smaller'
  },
  max: {
    type: 'number',
    doc: 'Upper bound on open connections in this process (a `budget` may cap it further).',
    rule: { kind: 'integer', min: 1 },
    default: 10
  },
  acquireTimeoutMillis: {
    type: 'number',
    doc: 'How long a query waits for a free connection before failing with `FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT`. knex applies the smaller of it and knex\'s `acquireConnectionTimeout`.',
    rule: milliseconds(1),
    // knex applies the smaller of the two; the plugin's 5 s stands in only when neither is set.
    defaultFrom: (scope) => scope.parent?.get('acquireConnectionTimeout') ?? 5000,
    map: (value, scope) => Math.min(value as number, (scope.parent?.get('acquireConnectionTimeout') as number | undefined) ?? Infinity),
    defaultText: '`5000`, or knex\'s `acquireConnectionTimeout` when set'
  },
  createTimeoutMillis: {
    type: 'number',
    doc: 'How long opening one connection may take.',
    rule: milliseconds(1),
    defaultText: '`30000` (tarn\'s)'
  },
  destroyTimeoutMillis: {
    type: 'number',
    doc: 'How long closing one connection may take.',
    rule: milliseconds(1),
    defaultText: '`5000` (tarn\'s)'
  },
  idleTimeoutMillis: {
    type: 'number',
    doc: 'Idle connections above `pool.min` are closed after this long.',
    rule: milliseconds(1),
    defaultText: '`30000` (tarn\'s)'
  },
  reapIntervalMillis: {
    type: 'number',
    doc: 'How often idle connections are checked.',
    rule: milliseconds(1),
    defaultText: '`1000` (tarn\'s)'
  },
  createRetryIntervalMillis: {
    type: 'number',
    doc: 'Pause between failed connection attempts.',
    rule: milliseconds(1),
    defaultText: '`200` (tarn\'s)'
  },
  maxConnectionLifetimeMillis: {
    type: 'number',
    doc: 'Connections are replaced after this long; idle ones near it are replaced in the background.',
    rule: milliseconds(1),
    default: 30 * 60_000,
    defaultText: '`1800000` (30 minutes)'
  },
  maxConnectionLifetimeJitterMillis: {
    type: 'number',
    doc: 'Random spread added to each connection\'s lifetime, so they do not expire together.',
    // A spread of 0 is a choice (all connections expire on time); every other timing must be positive.
    rule: milliseconds(0),
    defaultFrom: (scope) => Math.round((scope.get('maxConnectionLifetimeMillis') as number) * 0.1),
    defaultText: '10% of `pool.maxConnectionLifetimeMillis`'
  },
  afterCreate: {
    type: '(connection, done) => void',
    doc: 'knex\'s hook for per-connection session set-up (`SET time_zone`, `SET sql_mode`): it runs after the plugin\'s own set-up, and a connection it fails is closed (stock knex leaves it open).',
    rule: { kind: 'function' },
    nullIsUnset: true,
    knex: true,
    defaultText: 'none'
  },
  validate: {
    type: '(connection) => boolean | Promise<boolean>',
    doc: 'knex\'s hook to refuse a connection on borrow; runs before the plugin\'s borrow check.',
    rule: { kind: 'function' },
    nullIsUnset: true,
    knex: true,
    defaultText: 'none'
  },
  log: {
    type: '(message, level) => void',
    doc: 'tarn\'s log: receives its warnings (passwords scrubbed) instead of the Fastify logger.',
    rule: { kind: 'function' },
    nullIsUnset: true,
    knex: true,
    defaultText: 'the Fastify logger'
  },
  propagateCreateError: {
    type: 'true',
    doc: 'knex\'s setting, which the plugin needs as it is: a failed connect fails the waiting query at once.',
    rule: { kind: 'literal', values: [true], expected: 'true or left out: with false a wrong password or an unreachable server would make every query wait for the acquire timeout instead of failing at once' },
    knex: true,
    defaultText: '`true`'
  },
  name: refuse('tarn (knex\'s pool) does not take it'),
  refreshIdle: refuse(GENERIC_POOL),
  returnToHead: refuse(GENERIC_POOL),
  priorityRange: refuse(GENERIC_POOL)
} as const satisfies OptionTable

export const BUDGET_OPTIONS = {
  workers: {
    type: 'number',
    doc: 'Processes sharing the total (a cluster worker that had to assume 1 says so in a warning).',
    rule: { kind: 'integer', min: 1 },
    defaultFrom: () => workersFromEnvironment().workers,
    defaultText: '`WEB_CONCURRENCY`, then pm2\'s `instances`, else `1`'
  },
  total: {
    type: 'number | \'server\'',
    doc: 'Connections all processes may hold: a number, or `\'server\'`: the smaller of the server\'s `@@max_connections` and the account\'s `@@max_user_connections`, read at warm-up.',
    rule: { kind: 'either', rules: [{ kind: 'literal', values: ['server'] }, { kind: 'integer', min: 1, expected: 'a positive integer' }] },
    default: 'server'
  },
  reserve: {
    type: 'number',
    doc: 'Connections left for everyone else: admin sessions, migrations, monitoring, the short-lived connection of each `KILL QUERY`.',
    rule: { kind: 'integer', min: 0 },
    default: 10
  },
  onExceed: {
    type: '\'warn\' | \'fail\'',
    doc: 'What a configuration that cannot fit (an explicit `pool.max` or `pool.min` above the share, or a share below 1) does at warm-up: log a warning, or make `ready()` reject with `FST_FORK_SAFE_DB_BUDGET_EXCEEDED`.',
    rule: { kind: 'literal', values: ['warn', 'fail'] },
    default: 'warn'
  }
} as const satisfies OptionTable

export const UNSAFE_OPTIONS = {
  multipleStatements: {
    type: 'boolean',
    doc: 'Allow `multipleStatements: true` (or the `MULTI_STATEMENTS` flag), which turns any SQL injection into arbitrary SQL.',
    rule: { kind: 'boolean' },
    default: false
  },
  localInfile: {
    type: 'boolean',
    doc: 'Allow LOAD DATA LOCAL INFILE (`infileStreamFactory`, or the `LOCAL_FILES` flag). Without it the plugin withdraws the capability mysql2 announces by default, so the server never asks for a client file.',
    rule: { kind: 'boolean' },
    default: false
  },
  insecureTls: {
    type: 'boolean',
    doc: 'Allow `ssl.rejectUnauthorized: false`, which accepts any certificate (a man in the middle).',
    rule: { kind: 'boolean' },
    default: false
  }
} as const satisfies OptionTable

/** The plugin's options and knex's own at the top level, in the order the docs list them. */
export const PLUGIN_OPTIONS = {
  connection: {
    type: 'string | mysql2.ConnectionOptions | Array<string | mysql2.ConnectionOptions> | (() => string | mysql2.ConnectionOptions | Promise<…>)',
    doc: 'A `mysql://` or `mariadb://` URL (percent-encode special characters; query parameters are mysql2 options), a mysql2 connection object (unknown keys, mysql2\'s own pool settings and `debug` are refused), or knex\'s connection function for rotating credentials: it is called for the settings of new connections, and again whenever the `expirationChecker` of its last result returns true; each result is checked like a static connection, and every password it returns is scrubbed from logs. Several hosts: a non-empty list of URLs and objects (each checked alike, with settings of its own), or a URL listing them (`mysql://user:password@h1:3306,h2:3306/database`); `hostPolicy` picks among them and `role` says what each must be. A connection function stays one host.',
    // The value itself is checked by connection.ts, with FST_FORK_SAFE_DB_INVALID_CONNECTION.
    rule: { kind: 'custom', expected: 'a URL like mysql://user:password@host:3306/database, a mysql2 connection object, a list of them, or a function returning one', check: () => {} },
    required: 'a URL like mysql://user:password@host:3306/database, a mysql2 connection object, a list of them, or a function returning one'
  },
  hostPolicy: {
    type: '\'sequential\' | \'random\'',
    doc: 'Which of several hosts a new connection goes to: `\'sequential\'`, the first host in rotation (the others are standbys, and the first is used again once it is back); `\'random\'`, any host in rotation, uniformly. A host whose connect fails (or whose role does not fit) leaves the rotation and is probed in the background until it answers.',
    rule: { kind: 'literal', values: ['sequential', 'random'], expected: '\'sequential\' or \'random\'' },
    default: 'sequential',
    defaultText: '`\'sequential\'`'
  },
  role: {
    type: '\'primary\' | \'any\'',
    doc: 'What each new connection\'s server must be: `\'primary\'`, one that takes writes (not `read_only`, not `innodb_read_only`, and on Galera a synced node), else the next host is tried; `\'any\'`, any server that answers queries (with several hosts, a Galera node that is not synced is still skipped).',
    rule: { kind: 'literal', values: ['primary', 'any'], expected: '\'primary\' or \'any\'' },
    default: 'any',
    defaultText: '`\'any\'`'
  },
  pool: {
    type: 'object',
    doc: 'knex\'s pool (tarn) settings, and knex\'s pool hooks.',
    rule: { kind: 'group', options: POOL_OPTIONS },
    // knex builds its default pool for `pool: null` too.
    nullIsUnset: true,
    default: {},
    defaultText: '`{ min: 2, max: 10, acquireTimeoutMillis: 5000 }`'
  },
  warmup: {
    type: 'boolean | number',
    doc: 'Connections to open and verify on `onReady`: `true` for `pool.min`, `false` to stay lazy until the first query, or a count (those above `pool.min` are closed again after `pool.idleTimeoutMillis` of idleness).',
    rule: { kind: 'either', rules: [{ kind: 'boolean' }, { kind: 'integer', min: 0, max: { option: 'pool.max', of: (scope) => poolOf(scope).max } }] },
    default: true,
    map: (value, scope) => value === true ? poolOf(scope).min : value === false ? 0 : value
  },
  allowColdStart: {
    type: 'boolean',
    doc: 'When warm-up fails, let `ready()` resolve with a cold pool and a logged warning instead of rejecting.',
    rule: { kind: 'boolean' },
    default: false
  },
  decorator: {
    type: 'string',
    doc: 'The name of the `fastify` and `request` decorators; use another name to register a second pool (a replica).',
    rule: { kind: 'string', pattern: IDENTIFIER, expected: 'an identifier such as "db" or "replica"' },
    default: 'db',
    defaultText: '`\'db\'`'
  },
  checkAfterIdleMillis: {
    type: 'number',
    doc: 'A borrowed connection idle at least this long gets a socket check with no round trip: socket events that already arrived are processed first, so a connection the server closed (`KILL`, `wait_timeout`, restart) is replaced, not handed out. `0` checks every borrow.',
    rule: milliseconds(0),
    default: 0
  },
  pingAfterIdleMillis: {
    type: 'number',
    doc: 'A borrowed connection idle at least this long is pinged first (one round trip), which also catches peers that vanished silently; `0` pings on every borrow.',
    rule: milliseconds(0),
    default: 30_000
  },
  queryTimeoutMillis: {
    type: 'number',
    doc: 'Every query without a `.timeout()` of its own gets this one, with server-side cancellation: the caller gets `FST_FORK_SAFE_DB_QUERY_TIMEOUT` at once, `KILL QUERY` stops the statement in the background, and the connection is closed rather than reused (inside a transaction, which rolls it back). `0` turns it off.',
    rule: milliseconds(0, '0 = off'),
    default: 30_000
  },
  maxPendingAcquires: {
    type: 'number',
    doc: 'How many queries may wait for a free connection once the pool is at `pool.max`; beyond that a query fails at once with `FST_FORK_SAFE_DB_POOL_SATURATED` (503 with `Retry-After`).',
    rule: { kind: 'integer', min: 0 },
    defaultFrom: (scope) => 4 * poolOf(scope).max,
    defaultText: '`4 * pool.max`'
  },
  closeTimeoutMillis: {
    type: 'number',
    doc: 'From the moment `close()` begins, how long in-flight queries may run; then every pooled socket (and every connect in progress) is destroyed with `FST_FORK_SAFE_DB_CLOSE_TIMEOUT`, so `close()` finishes even when the database stopped answering.',
    rule: milliseconds(1),
    default: 10_000
  },
  allowUnsafe: {
    type: 'object',
    doc: 'Explicit opt-ins for driver features that are dangerous by default, checked in connection objects and URL query strings alike.',
    rule: { kind: 'group', options: UNSAFE_OPTIONS },
    default: {},
    defaultText: '`{}`'
  },
  budget: {
    type: 'object',
    doc: 'Shares a total number of connections among all processes: each process\'s `pool.max` is capped at `floor((total - reserve) / workers)` (and `pool.min` at that `pool.max`). The budget as applied is in `stats().budget`.',
    rule: { kind: 'group', options: BUDGET_OPTIONS },
    defaultText: 'none (no budget)'
  },
  warmupConcurrency: {
    type: 'number',
    doc: 'Warm-up opens at most this many connections at the same time (the first one alone: it reads the server\'s limits), so a fleet restarting at once sends `workers x warmupConcurrency` handshakes, not `workers x pool.min`.',
    rule: { kind: 'integer', min: 1 },
    default: 2
  },
  warmupJitterMillis: {
    type: 'number',
    doc: 'Warm-up starts after a random delay of up to this long, spreading the connects of workers that start together; it delays `ready()` by as much.',
    rule: milliseconds(0),
    default: 0
  },
  maxReplicaLagSeconds: {
    type: 'number',
    doc: 'Turns on the lag guard for a registration of read replicas: a host further behind its primary than this (`Seconds_Behind_Master`), or not replicating, gets no new borrows until it catches up; when every host lags, queries fail with `FST_FORK_SAFE_DB_REPLICA_LAG` (503) or run on `replicaLagFallback`. A primary listed among the hosts never lags.',
    rule: { kind: 'integer', min: 0, expected: 'a non-negative integer (seconds)' },
    defaultText: 'none (no lag guard)'
  },
  replicaLagCheckMillis: {
    type: 'number',
    doc: 'How often the lag guard reads each host\'s lag, on a connection of its own per host; a check that has not answered within this long (at least 1000 ms) counts as failed. A lagging host stops getting borrows within about this long.',
    rule: { kind: 'integer', min: 100, max: 60_000, expected: 'an integer from 100 to 60000 (milliseconds)' },
    default: 1000
  },
  replicaLagFallback: {
    type: 'string',
    doc: 'The `decorator` of another registration on the same Fastify instance (e.g. `\'db\'`, the primary): while every host lags, queries borrow that registration\'s connections instead of failing. Checked at `ready()`.',
    rule: {
      kind: 'custom',
      expected: 'the decorator name of another registration, such as "db"',
      check (value, name, fail) {
        if (typeof value !== 'string' || !IDENTIFIER.test(value)) fail(`${name} must be the decorator name of another registration, such as "db", got ${describeValue(value)}`)
      }
    },
    defaultText: 'none (queries fail while every host lags)'
  },

  metrics: {
    type: 'boolean | MeterProvider | { meterProvider?, poolName? }',
    doc: 'OpenTelemetry metrics named as the database semantic conventions name them: `db.client.operation.duration` and the pool\'s `db.client.connection.*` (count by state, idle.max, idle.min, max, pending_requests, timeouts, create_time, wait_time, use_time), with `db.client.connection.pool.name`, `db.system.name`, `server.address`, `server.port` and `db.namespace`. `true` uses the global meter provider of `@opentelemetry/api` (an optional peer dependency: without it, registration fails with `FST_FORK_SAFE_DB_INVALID_OPTION`); a meter provider, or `{ meterProvider, poolName }`, names its own. With no SDK installed, the API\'s no-op meter costs nothing.',
    rule: {
      kind: 'custom',
      expected: 'true, false, a meter provider (an object with getMeter), or { meterProvider?, poolName? }',
      check (value, name, fail) {
        if (typeof value === 'boolean' || isMeterProvider(value)) return
        if (!isPlainObject(value)) fail(`${name} must be true, false, a meter provider (an object with getMeter) or { meterProvider?, poolName? }, got ${describeValue(value)}`)
        const { meterProvider, poolName, ...unknown } = value as Record<string, unknown>
        const extra = Object.keys(unknown)
        if (extra.length > 0) fail(`${name} has an unknown key \`${extra[0]}\` (it takes meterProvider and poolName)`)
        if (meterProvider !== undefined && !isMeterProvider(meterProvider)) fail(`${name}.meterProvider must be a meter provider (an object with getMeter), got ${describeValue(meterProvider)}`)
        if (poolName !== undefined && (typeof poolName !== 'string' || poolName.length === 0)) fail(`${name}.poolName must be a non-empty string, got ${describeValue(poolName)}`)
      }
    },
    default: false,
    defaultText: '`false`'
  },
  leakDetectionThresholdMillis: {
    type: 'number',
    doc: 'A connection held (borrowed and not given back) longer than this logs one warning with the stack of the code that borrowed it, its route and request id; when it comes back, one line says so. Nothing is reclaimed. `stats().holders` lists who holds each connection. Stacks are captured only while this is on. `0` turns it off.',
    rule: milliseconds(0, '0 = off'),
    default: 0
  },
  slowQueryMillis: {
    type: 'number',
    doc: 'A statement that runs longer than this logs one warning with its SQL (placeholders, never bound values), its duration, route and request id. `0` turns it off.',
    rule: milliseconds(0, '0 = off'),
    default: 0
  },

  // knex's own, passed to knex as they are (knex's documentation describes them).
  client: {
    type: '\'mysql2\'',
    doc: 'knex\'s client; the plugin is knex\'s mysql2 client, extended.',
    rule: { kind: 'literal', values: ['mysql2'], expected: '\'mysql2\' (the plugin extends knex\'s mysql2 client) or left out' },
    nullIsUnset: true,
    knex: true,
    defaultText: '`\'mysql2\'`'
  },
  log: {
    type: 'Knex.Logger',
    doc: 'knex\'s warnings, errors, deprecations and debug lines, passwords scrubbed; a level left out goes to the Fastify logger, not to the console knex would print to.',
    rule: {
      kind: 'custom',
      expected: 'an object of functions (warn, error, deprecate, debug)',
      check (value, name, fail) {
        if (!isPlainObject(value)) fail(`${name} must be an object of functions (warn, error, deprecate, debug), got ${describeValue(value)}`)
        for (const level of ['warn', 'error', 'deprecate', 'debug']) {
          // knex's logger takes a null level as unset (`userFn != null`).
          const levelValue = (value as Record<string, unknown>)[level]
          if (levelValue != null && typeof levelValue !== 'function') fail(`${name}.${level} must be a function, got ${describeValue(levelValue)}`)
        }
      }
    },
    knex: true,
    defaultText: 'the Fastify logger'
  },
  compileSqlOnError: {
    type: 'false',
    doc: 'Only `false`, the plugin\'s setting: `true` puts bound values into error messages (refused with `FST_FORK_SAFE_DB_UNSAFE_OPTION`).',
    rule: {
      kind: 'custom',
      expected: 'false or left out',
      check (value) {
        if (value === false) return
        throw new FST_FORK_SAFE_DB_UNSAFE_OPTION(`compileSqlOnError: true puts bound values into error messages, which the plugin keeps out of responses and logs; leave it out, got ${describeValue(value)}`)
      }
    },
    nullIsUnset: true,
    knex: true,
    defaultText: '`false`'
  },
  version: { type: 'string', doc: 'The server version knex assumes for its SQL.', rule: { kind: 'string' }, nullIsUnset: true, knex: true, defaultText: 'none' },
  debug: { type: 'boolean', doc: 'knex\'s debug lines, sent to the Fastify logger at debug level without bound values.', rule: { kind: 'boolean' }, nullIsUnset: true, knex: true, defaultText: '`false`' },
  postProcessResponse: { type: 'function', doc: 'Transforms every result (camelCase rows), on `fastify.db`, `request.db` and their transactions alike.', rule: { kind: 'function' }, nullIsUnset: true, knex: true, defaultText: 'none' },
  wrapIdentifier: { type: 'function', doc: 'Transforms every identifier (snake_case columns).', rule: { kind: 'function' }, nullIsUnset: true, knex: true, defaultText: 'none' },
  useNullAsDefault: { type: 'boolean', doc: 'Fills a multi-row insert\'s missing columns with NULL instead of DEFAULT.', rule: { kind: 'boolean' }, nullIsUnset: true, knex: true, defaultText: '`false`' },
  asyncStackTraces: { type: 'boolean', doc: 'Keeps the stack of the call that built a query on its errors.', rule: { kind: 'boolean' }, nullIsUnset: true, knex: true, defaultText: '`false`' },
  migrations: { type: 'object', doc: 'knex\'s migration settings: `app.db.migrate.latest()` (raw statements in a migration get `queryTimeoutMillis` too).', rule: { kind: 'object' }, nullIsUnset: true, knex: true, defaultText: 'knex\'s' },
  seeds: { type: 'object', doc: 'knex\'s seed settings: `app.db.seed.run()`.', rule: { kind: 'object' }, nullIsUnset: true, knex: true, defaultText: 'knex\'s' },
  acquireConnectionTimeout: {
    type: 'number',
    doc: 'knex\'s acquire timeout: the smaller of it and `pool.acquireTimeoutMillis` applies. A null one is refused (tarn would make it an acquire timeout of 0).',
    rule: milliseconds(1),
    knex: true,
    defaultText: 'none'
  },
  userParams: { type: 'object', doc: 'Available as `knex.userParams`, and to `wrapIdentifier` and `postProcessResponse`.', rule: { kind: 'object' }, nullIsUnset: true, knex: true, defaultText: '`{}`' },
  connectionPool: refuse('an external pool may have been opened before the process forked and is not the plugin\'s to warm, check or drain; give `connection` and let the plugin build the pool in each process', true),
  dialect: refuse('the plugin is knex\'s mysql2 client; leave `dialect` out (or set `client: \'mysql2\'`)', true)
} as const satisfies OptionTable

/** The methods a warm-up request may use. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']

export const WORKER_WARMUP_OPTIONS = {
  requests: {
    type: 'Array<{ method?, url, headers?, body? }>',
    doc: 'The requests, each sent `rounds` times; `method` defaults to GET, `body` is sent as JSON.',
    rule: {
      kind: 'custom',
      expected: 'an array of requests such as { url: \'/\' }',
      check (value, name, fail) {
        if (!Array.isArray(value)) fail(`${name} must be an array of requests such as { url: '/' }, got ${describeValue(value)}`)
        ;(value as unknown[]).forEach((request, index) => {
          const { url, method = 'GET' } = (request ?? {}) as { url?: unknown, method?: unknown }
          if (typeof url !== 'string' || !url.startsWith('/')) fail(`${name}[${index}].url must be a path starting with /, got ${describeValue(url)}`)
          if (typeof method !== 'string' || !METHODS.includes(method)) fail(`${name}[${index}].method must be one of ${METHODS.join(', ')}, got ${describeValue(method)}`)
        })
      }
    },
    required: 'an array of requests such as { url: \'/\' }',
    // Copied, so that changing the caller's objects later changes nothing here.
    map: (value) => (value as object[]).map((request) => ({ ...request }))
  },
  rounds: { type: 'number', doc: 'How many times each request is sent.', rule: { kind: 'integer', min: 1, max: 10_000 }, default: 20 },
  concurrency: { type: 'number', doc: 'Requests in flight at the same time.', rule: { kind: 'integer', min: 1, max: 100 }, default: 2 },
  maxMillis: { type: 'number', doc: 'The warm-up stops after this long, done or not, and the worker starts listening.', rule: { kind: 'integer', min: 0, max: MAX_TIMER_MILLIS }, default: 3000 }
} as const satisfies OptionTable

const signals = {
  kind: 'custom',
  expected: 'an array of signal names such as \'SIGTERM\'',
  check (value, name, fail) {
    if (!Array.isArray(value) || !value.every((signal) => typeof signal === 'string' && /^SIG[A-Z0-9]+$/.test(signal))) {
      fail(`${name} must be an array of signal names such as 'SIGTERM', got ${describeValue(value)}`)
    }
  }
} as const satisfies OptionSpec['rule']
const copyList = (value: unknown) => value === undefined ? undefined : [...value as unknown[]]

/** The worker helper's options (`fastify-fork-safe-db/worker`). */
export const WORKER_OPTIONS = {
  drainMillis: {
    type: 'number',
    doc: 'After the worker stops accepting, how long open connections get to close on their own; then the connections that carry no request are closed.',
    rule: { kind: 'integer', min: 0, max: MAX_TIMER_MILLIS },
    default: 5000
  },
  closeMillis: {
    type: 'number',
    doc: 'How long `fastify.close()` may take (in-flight requests, then onClose hooks, the pool\'s among them) before the connections of requests still running are destroyed. Keep it above the plugin\'s `closeTimeoutMillis`.',
    rule: { kind: 'integer', min: 0, max: MAX_TIMER_MILLIS },
    default: 10_000
  },
  disconnectMillis: {
    type: 'number',
    doc: 'How long to wait for the cluster primary to confirm it will hand this worker no more connections, before closing the channel anyway.',
    rule: { kind: 'integer', min: 0, max: MAX_TIMER_MILLIS },
    default: 5000
  },
  signals: {
    type: 'string[]',
    doc: 'Signals on which the worker retires, then exits (0, or 1 if a step timed out). pm2 stops instances with SIGINT; Kubernetes and systemd send SIGTERM. `[]` leaves signals to you.',
    rule: signals,
    default: ['SIGINT', 'SIGTERM'],
    map: copyList
  },
  ignoreSignals: {
    type: 'string[]',
    doc: 'Signals that are logged and otherwise ignored: a closing terminal sends SIGHUP to the whole process group, and a worker with no handler would die at once, undrained.',
    rule: signals,
    // The default depends on whether this process is a cluster worker: worker/options.ts applies it.
    defaultText: '`[\'SIGHUP\']` in a cluster worker, else `[]`',
    map: copyList
  },
  warmup: {
    type: 'object',
    doc: 'Requests sent over a private loopback listener once the app is ready, before it listens.',
    rule: { kind: 'group', options: WORKER_WARMUP_OPTIONS, expected: '{ requests: [{ url }], rounds?, concurrency?, maxMillis? }' },
    default: { requests: [] },
    defaultText: 'none'
  }
} as const satisfies OptionTable
