import type { ConnectionOptions } from 'mysql2'
import { FST_FORK_SAFE_DB_INVALID_CONNECTION, FST_FORK_SAFE_DB_UNSAFE_OPTION } from '../errors'
import { describeUrl, hideProperties } from '../logging/redact'
import { hostLabel, splitHostList, type ResolvedHost } from './host-list'
import { copyOptions, describeValue, expectInteger, isPlainObject } from './validate'

/** The dangerous driver features a user can opt into, one flag each. */
export interface UnsafeOptIns {
  /** Allow `multipleStatements: true` (or the MULTI_STATEMENTS flag), which turns any SQL injection into arbitrary SQL. */
  multipleStatements?: boolean
  /** Allow LOAD DATA LOCAL INFILE (`infileStreamFactory`, the LOCAL_FILES flag): the server may ask for client files. */
  localInfile?: boolean
  /** Allow `ssl.rejectUnauthorized: false`, which accepts any certificate (a man in the middle). */
  insecureTls?: boolean
}

/** What a connection function returns: a URL or a mysql2 object, with knex's optional `expirationChecker`. */
export type ProvidedConnection = string | (ConnectionOptions & { expirationChecker?: () => boolean })

/**
 * knex's way to rotate credentials (cloud IAM tokens): called before each new connection while
 * the settings it last returned are expired (always, without an `expirationChecker`).
 */
export type ConnectionProvider = () => ProvidedConnection | Promise<ProvidedConnection>

export type { ResolvedHost }

/** The `connection` option after registration: checked settings, or a function whose results are checked as they come. */
export interface ResolvedConnection {
  /** What knex is given as `connection` (with several hosts, the first host's settings). */
  readonly knex: ConnectionOptions | (() => Promise<ConnectionOptions>)
  /** `user@host:port/database`, safe for logs (for a function: of its latest result; with several hosts, each, comma-separated). */
  description: string
  /** Every host, in the order given: one for a single URL, object or connection function. */
  readonly hosts: readonly ResolvedHost[]
}

// Probes a silently dropped peer within a minute instead of the OS default of two hours.
const TCP_KEEPALIVE_INITIAL_DELAY_MILLIS = 30_000
// mysql2 gives every connection a cache of prepared statements, preallocated at its size: four
// arrays of `maxPreparedStatements` (16,000) slots, about half a megabyte per connection that every
// major GC traces. knex never prepares a statement (it sends `query`, not `execute`), so under the
// plugin the cache stays empty; a warm pool of 10 carried 5 MB of it, and bench:instructions
// counted the extra marking on every request. A connection used directly with `execute()` still
// caches its statements, up to this many (or whatever the user sets).
const MAX_PREPARED_STATEMENTS = 16

/**
 * Validates `connection` (a URL, a mysql2 object, or a function returning one). Every password
 * it holds, now or (for a function) later, is added to `secrets` for scrubbing.
 */
export function resolveConnection (connection: unknown, unsafe: UnsafeOptIns, secrets: string[]): ResolvedConnection {
  if (typeof connection !== 'function') return resolveHosts(connection, unsafe, secrets)
  const provide = connection as ConnectionProvider
  const host: ResolvedHost = { index: 0, label: 'a connection function (not called yet)', settings: undefined }
  const resolved: ResolvedConnection = {
    description: 'a connection function (not called yet)',
    hosts: [host],
    knex: async () => {
      const provided: unknown = await provide()
      if (Array.isArray(provided) || (typeof provided === 'string' && splitHostList(provided) !== undefined)) {
        throw invalid(`the connection function's result must be one URL or mysql2 connection object (a connection function stays one host; list several hosts in connection itself), got ${Array.isArray(provided) ? 'an array' : 'a URL with several hosts'}`)
      }
      // knex reads the checker by name too (and mysql2 the rest of the result as it is).
      const { expirationChecker, ...rest } = isPlainObject(provided) ? copyOptions(provided, [...READ_BY_NAME, 'expirationChecker']) : { expirationChecker: undefined }
      if (expirationChecker !== undefined && typeof expirationChecker !== 'function') {
        throw invalid(`the connection function's expirationChecker must be a function, got ${describeValue(expirationChecker)}`)
      }
      const checked = checkConnection(typeof provided === 'string' ? provided : isPlainObject(provided) ? rest : provided, unsafe, 'the connection function\'s result')
      for (const secret of checked.secrets) if (!secrets.includes(secret)) secrets.push(secret)
      resolved.description = checked.description
      host.label = hostLabel(checked.settings)
      const settings = driverSettings(checked.settings)
      // knex uses a function's result as it is (a static object it copies, and hides itself).
      hideProperties(settings, [...SECRET_KEYS, ...KNEX_CONNECTION_KEYS])
      // knex reads the checker off the result and deletes it before mysql2 sees the settings.
      return expirationChecker === undefined ? settings : Object.assign(settings, { expirationChecker })
    }
  }
  return resolved
}

/**
 * A URL (with one host or several), a mysql2 object, or a non-empty list of them: each host is
 * checked like a one-host connection, with settings of its own (user, password, database may
 * differ). One host resolves exactly as before lists existed.
 */
function resolveHosts (connection: unknown, unsafe: UnsafeOptIns, secrets: string[]): ResolvedConnection {
  const checked = entriesOf(connection).map((entry) => checkConnection(entry.value, unsafe, entry.what))
  for (const one of checked) for (const secret of one.secrets) if (!secrets.includes(secret)) secrets.push(secret)
  // A multi-host URL is a secret as a whole, like a one-host URL (the password is inside).
  if (typeof connection === 'string' && !secrets.includes(connection)) secrets.push(connection)
  const labels = new Set<string>()
  const hosts = checked.map((one, index): ResolvedHost => {
    const label = hostLabel(one.settings)
    if (labels.has(label)) throw invalid(`connection must list each host once, got ${label} twice`)
    labels.add(label)
    // The host's own copy: mysql2 must not see knex's `collate`, and nothing should print a password.
    const settings = driverSettings(one.settings)
    if (checked.length > 1) hideProperties(settings, [...SECRET_KEYS, ...KNEX_CONNECTION_KEYS])
    return { index, label, settings }
  })
  return {
    knex: driverSettings(checked[0].settings),
    description: checked.map((one) => one.description).join(', '),
    hosts
  }
}

/** The connections a `connection` value lists, each with the name its messages use. */
function entriesOf (connection: unknown): Array<{ value: unknown, what: string }> {
  if (typeof connection === 'string') return (splitHostList(connection) ?? [connection]).map((value) => ({ value, what: 'connection' }))
  if (!Array.isArray(connection)) return [{ value: connection, what: 'connection' }]
  if (connection.length === 0) throw invalid('connection must be a URL, a mysql2 connection object, or a non-empty list of them, got an empty array')
  return connection.flatMap((entry: unknown, index) => {
    const what = `connection[${index}]`
    if (typeof entry === 'function' || Array.isArray(entry)) {
      throw invalid(`${what} must be a URL or a mysql2 connection object (a connection function stays one host, given alone), got ${Array.isArray(entry) ? 'an array' : 'a function'}`)
    }
    return typeof entry === 'string' ? (splitHostList(entry) ?? [entry]).map((value) => ({ value, what })) : [{ value: entry, what }]
  })
}

/** The settings mysql2 gets: the user's, on top of the plugin's defaults. */
function driverSettings (settings: ConnectionOptions): ConnectionOptions {
  return { keepAliveInitialDelay: TCP_KEEPALIVE_INITIAL_DELAY_MILLIS, maxPreparedStatements: MAX_PREPARED_STATEMENTS, ...settings }
}

/** A validated mysql2 connection object, with what the plugin needs to keep secret. */
export interface CheckedConnection {
  /** A private copy for the driver; the caller's object is never mutated. */
  settings: ConnectionOptions
  /** Every secret value the settings hold, for scrubbing text. */
  secrets: string[]
  /** `user@host:port/database`, safe for logs. */
  description: string
}

// mysql2 writes a console warning for any key outside its list, so we check against the same
// list up front and fail with a coded error instead.
const DRIVER_KEYS = [
  'authPlugins', 'authSwitchHandler', 'bigNumberStrings', 'charset', 'charsetNumber', 'compress',
  'connectAttributes', 'connectTimeout', 'database', 'dateStrings', 'decimalNumbers', 'disableEval',
  'enableCleartextPlugin', 'enableKeepAlive', 'flags', 'gracefulEnd', 'host', 'infileStreamFactory',
  'insecureAuth', 'jsonStrings', 'keepAliveInitialDelay', 'localAddress', 'maxPreparedStatements',
  'multipleStatements', 'namedPlaceholders', 'nestTables', 'password', 'password1', 'password2',
  'password3', 'passwordSha1', 'port', 'queryFormat', 'rowsAsArray', 'socketPath', 'ssl', 'stream',
  'stringifyObjects', 'supportBigNumbers', 'timezone', 'trace', 'typeCast', 'user'
] as const

/**
 * knex's own keys in a connection object: its MySQL dialect reads `collate` off the connection
 * settings for the default collation of the tables it creates. mysql2 does not take it (it would
 * print a console warning), so it is kept out of mysql2's sight: not enumerable on what mysql2 gets.
 */
export const KNEX_CONNECTION_KEYS = ['collate'] as const

// Keys mysql2 accepts but that make no sense (or harm) under a knex-managed pool.
const REFUSED_KEYS: Record<string, string> = {
  uri: 'pass the URL as `connection` itself',
  debug: 'it prints packets and statements with their values to the console; use the Fastify log level instead',
  isServer: 'it is for writing a MySQL server, not a client',
  pool: 'the plugin owns the pool',
  connectionLimit: 'it configures mysql2\'s own pool; set pool.max instead',
  maxIdle: 'it configures mysql2\'s own pool; set pool.min instead',
  idleTimeout: 'it configures mysql2\'s own pool; set pool.idleTimeoutMillis instead',
  queueLimit: 'it configures mysql2\'s own pool, which the plugin does not use',
  waitForConnections: 'it configures mysql2\'s own pool, which the plugin does not use',
  resetOnRelease: 'it configures mysql2\'s own pool, which the plugin does not use',
  Promise: 'it configures mysql2\'s promise wrapper, which the plugin does not use'
}

// Every key mysql2 reads by name: a copy keeps them even when they are not enumerable (a hidden
// password), so each is checked, and the refused ones refused, like any other.
const READ_BY_NAME = [...DRIVER_KEYS, ...KNEX_CONNECTION_KEYS, ...Object.keys(REFUSED_KEYS)]
const CONNECTION_KEYS: readonly string[] = [...DRIVER_KEYS, ...KNEX_CONNECTION_KEYS]

/** Every option in which mysql2 takes a password. */
export const SECRET_KEYS = ['password', 'password1', 'password2', 'password3', 'passwordSha1'] as const
const STRING_KEYS = ['host', 'user', 'database', 'socketPath', 'charset', 'localAddress', ...KNEX_CONNECTION_KEYS, ...SECRET_KEYS] as const
const MILLISECOND_KEYS = ['connectTimeout', 'keepAliveInitialDelay'] as const
// The formats mysql2 accepts; anything else it replaces with UTC after a console warning.
const TIMEZONE = /^(?:local|Z|[ +-]\d\d:\d\d)$/

const invalid = (message: string) => new FST_FORK_SAFE_DB_INVALID_CONNECTION(message)

/** Validates `connection` (a URL or a mysql2 object) and returns a private, checked copy. */
export function checkConnection (connection: unknown, unsafe: UnsafeOptIns, what = 'connection'): CheckedConnection {
  if (typeof connection === 'string') return checkObject(parseConnectionUrl(connection), unsafe, [connection])
  if (isPlainObject(connection)) return checkObject(copyOptions(connection, READ_BY_NAME), unsafe, [])
  throw invalid(
    `${what} must be a URL like mysql://user:password@host:3306/database, a mysql2 connection object or a function returning one, got ${describeValue(connection)}`
  )
}

function parseConnectionUrl (text: string): Record<string, unknown> {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    // The text itself is not echoed: a malformed URL is exactly where a password hides in plain sight.
    throw invalid('connection must be a URL like mysql://user:password@host:3306/database, got a string that is not a valid URL (percent-encode special characters in the user and password)')
  }
  // Only the scheme is echoed until the URL is known to have an authority part: without one
  // (`app:secret@host`, `mysql:user:secret@host`) the credentials end up in the path.
  if (url.protocol !== 'mysql:' && url.protocol !== 'mariadb:') {
    throw invalid(`connection URL must start with mysql:// or mariadb://, got a URL with the scheme ${url.protocol}`)
  }
  if (url.hostname === '') throw invalid(`connection URL must name a host (mysql://user:password@host:3306/database), got a ${url.protocol} URL without one`)
  const shown = describeUrl(url)
  if (url.username === '') {
    // mysql2 would connect as the empty user and report a misleading "Access denied for user ''".
    throw invalid(`connection URL must name a user (mysql://user:password@host/database), got ${shown}`)
  }
  const database = decode(url.pathname.replace(/^\//, ''), shown)
  if (database.includes('/')) throw invalid(`connection URL path must be a single database name, got ${shown}`)

  const settings: Record<string, unknown> = {
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    user: decode(url.username, shown)
  }
  if (url.password !== '') settings.password = decode(url.password, shown)
  if (url.port !== '') settings.port = Number(url.port)
  if (database !== '') settings.database = database
  for (const [key, value] of url.searchParams) {
    if (key in settings) throw invalid(`connection URL query must not repeat ${key}, which the URL already sets`)
    settings[key] = parseQueryValue(value)
  }
  return settings
}

function decode (value: string, shown: string): string {
  try {
    return decodeURIComponent(value)
  } catch {
    throw invalid(`connection URL has a malformed percent-encoding in ${shown}`)
  }
}

// Same rule as mysql2's own URL parser: JSON where it parses (numbers, booleans, ssl objects), else text.
function parseQueryValue (value: string): unknown {
  try {
    return JSON.parse(value)
  } catch {
    return value
  }
}

function checkObject (settings: Record<string, unknown>, unsafe: UnsafeOptIns, secrets: string[]): CheckedConnection {
  for (const key of Object.keys(settings)) {
    if (key in REFUSED_KEYS) throw invalid(`connection.${key} is not supported: ${REFUSED_KEYS[key]}`)
    if (!CONNECTION_KEYS.includes(key)) {
      throw invalid(`connection.${key} is not a mysql2 connection option; expected one of: ${CONNECTION_KEYS.join(', ')}`)
    }
  }
  for (const key of STRING_KEYS) {
    const value = settings[key]
    if (value !== undefined && typeof value !== 'string') {
      const secret = (SECRET_KEYS as readonly string[]).includes(key)
      throw invalid(`connection.${key} must be a string, got ${describeValue(value, secret)}`)
    }
  }
  const hasTransport = settings.socketPath !== undefined || settings.stream !== undefined
  if (!hasTransport && (settings.host === undefined || settings.host === '')) {
    throw invalid('connection.host must be a non-empty string (or set connection.socketPath), got ' + describeValue(settings.host))
  }
  if (settings.user === undefined || settings.user === '') {
    throw invalid(`connection.user must be a non-empty string, got ${describeValue(settings.user)}`)
  }
  if (settings.port !== undefined) expectInteger(FST_FORK_SAFE_DB_INVALID_CONNECTION, 'connection.port', settings.port, 1, 65535)
  for (const key of MILLISECOND_KEYS) {
    if (settings[key] !== undefined) {
      expectInteger(FST_FORK_SAFE_DB_INVALID_CONNECTION, `connection.${key}`, settings[key], 0, Number.MAX_SAFE_INTEGER, 'a non-negative integer (milliseconds)')
    }
  }
  if (settings.timezone !== undefined && (typeof settings.timezone !== 'string' || !TIMEZONE.test(settings.timezone))) {
    throw invalid(`connection.timezone must be 'local', 'Z' or an offset like '+02:00', got ${describeValue(settings.timezone)}`)
  }
  checkUnsafe(settings, unsafe)

  for (const key of SECRET_KEYS) {
    const value = settings[key]
    if (typeof value === 'string' && value !== '') secrets.push(value)
  }
  return { settings: settings as ConnectionOptions, secrets, description: describeSettings(settings) }
}

function refuse (option: string, why: string, optIn: keyof UnsafeOptIns, value: unknown): never {
  throw new FST_FORK_SAFE_DB_UNSAFE_OPTION(`${option} ${why}; set allowUnsafe.${optIn}: true to opt in, got ${describeValue(value)}`)
}

// The same capability can be asked for by its own option or by a mysql2 client flag, in an
// object or a URL query: every route is checked.
function checkUnsafe (settings: Record<string, unknown>, unsafe: UnsafeOptIns): void {
  const flags = parseFlags(settings.flags)
  if (settings.multipleStatements !== undefined && settings.multipleStatements !== false && unsafe.multipleStatements !== true) {
    refuse('connection.multipleStatements', 'turns any SQL injection into arbitrary SQL', 'multipleStatements', settings.multipleStatements)
  }
  if (flags.includes('MULTI_STATEMENTS') && unsafe.multipleStatements !== true) {
    refuse('connection.flags MULTI_STATEMENTS', 'turns any SQL injection into arbitrary SQL', 'multipleStatements', settings.flags)
  }
  if (settings.infileStreamFactory !== undefined && unsafe.localInfile !== true) {
    refuse('connection.infileStreamFactory', 'lets the server read files from this machine (LOAD DATA LOCAL INFILE)', 'localInfile', settings.infileStreamFactory)
  }
  if (flags.includes('LOCAL_FILES') && unsafe.localInfile !== true) {
    refuse('connection.flags LOCAL_FILES', 'lets the server read files from this machine (LOAD DATA LOCAL INFILE)', 'localInfile', settings.flags)
  }
  const ssl = settings.ssl
  if (isPlainObject(ssl) && ssl.rejectUnauthorized === false && unsafe.insecureTls !== true) {
    refuse('connection.ssl.rejectUnauthorized: false', 'accepts any certificate, so anyone in the path can read the traffic', 'insecureTls', false)
  }
  if (unsafe.localInfile !== true) {
    // mysql2 announces LOCAL_FILES by default; withdraw it so the server never asks.
    settings.flags = [...flags, '-LOCAL_FILES']
  }
}

function parseFlags (flags: unknown): string[] {
  if (flags === undefined) return []
  const list = Array.isArray(flags) ? flags : typeof flags === 'string' ? flags.split(',') : undefined
  if (list === undefined || !list.every((flag) => typeof flag === 'string')) {
    throw invalid(`connection.flags must be a comma-separated string or an array of strings, got ${describeValue(flags)}`)
  }
  return list.map((flag: string) => flag.trim().toUpperCase()).filter((flag) => flag !== '')
}

function describeSettings (settings: Record<string, unknown>): string {
  const where = settings.socketPath !== undefined
    ? String(settings.socketPath)
    : `${String(settings.host ?? 'localhost')}:${String(settings.port ?? 3306)}`
  const database = settings.database === undefined ? '' : `/${String(settings.database)}`
  return `${String(settings.user)}@${where}${database}`
}
