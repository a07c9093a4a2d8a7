import { isMariaDbServer } from '../driver/mysql2-parts'
import type { DriverConnection } from '../driver/types'
import type { HostRole, RoleVerdict } from './host'

// What a server says of its role, asked once on a new connection, in one round trip:
// - a Galera node (wsrep on) serves queries only when `wsrep_ready` is ON and `wsrep_local_state`
//   is 4 (Synced), whatever the role: MaxScale's rule. A node outside the primary component, or
//   donating/joining, answers 1047 or stale data;
// - a `primary` registration needs a server that takes writes: `read_only` off (on MySQL,
//   `super_read_only` forces `read_only` on, so it is covered) and `innodb_read_only` off (an
//   Aurora reader has only that one on).
// The statement depends on the server, told by its handshake (mysql2 reads "MariaDB" in the
// version): MariaDB keeps the status variables in information_schema.GLOBAL_STATUS and always
// has `wsrep_on` (0 without Galera, where the wsrep_* status rows still exist with
// wsrep_ready OFF); MySQL 8 dropped that table for performance_schema.global_status, and has
// `wsrep_*` rows only on a Galera build (Percona XtraDB Cluster). A server that refuses the one
// statement (a build without wsrep, a performance_schema the user may not read) is asked again
// with SHOW, which every version answers: two round trips, only there. An error that is not the
// server's answer (the connection was lost) rejects: the connect fails with it.

const MARIADB = 'SELECT @@global.read_only AS read_only, @@global.innodb_read_only AS innodb_read_only, @@global.wsrep_on AS wsrep_on, ' +
  "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_READY') AS wsrep_ready, " +
  "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_LOCAL_STATE') AS wsrep_local_state"

const MYSQL = 'SELECT @@global.read_only AS read_only, @@global.innodb_read_only AS innodb_read_only, @@global.super_read_only AS super_read_only, ' +
  "(SELECT VARIABLE_VALUE FROM performance_schema.global_status WHERE VARIABLE_NAME = 'wsrep_ready') AS wsrep_ready, " +
  "(SELECT VARIABLE_VALUE FROM performance_schema.global_status WHERE VARIABLE_NAME = 'wsrep_local_state') AS wsrep_local_state"

const SHOW_VARIABLES = "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('read_only', 'innodb_read_only', 'super_read_only', 'wsrep_on')"
const SHOW_STATUS = "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_ready', 'wsrep_local_state')"

/** Galera's wsrep_local_state for a node that is part of the primary component and synced. */
const SYNCED = '4'

/** The server's settings, by lower-case name; a missing one is undefined. */
type Settings = Record<string, unknown>

/** Whether a setting is on: 1, 'ON', or (MariaDB 11's read_only) 'NO_LOCK'/'NO_LOCK_NO_ADMIN'. */
function on (value: unknown): boolean {
  if (value === undefined || value === null) return false
  const text = String(value).toUpperCase()
  return text !== '0' && text !== 'OFF' && text !== ''
}

/** What the settings say of a server for `role`. */
function verdictOf (settings: Settings, role: HostRole): RoleVerdict {
  // MariaDB says wsrep_on; MySQL-based Galera builds have the wsrep status rows only when on.
  const galera = 'wsrep_on' in settings ? on(settings.wsrep_on) : settings.wsrep_ready !== undefined && settings.wsrep_ready !== null
  if (galera && (!on(settings.wsrep_ready) || String(settings.wsrep_local_state) !== SYNCED)) return 'not-ready'
  if (role === 'primary' && (on(settings.read_only) || on(settings.innodb_read_only) || on(settings.super_read_only))) return 'read-only'
  return 'ok'
}

function query (connection: DriverConnection, sql: string): Promise<Array<Record<string, unknown>>> {
  return new Promise((resolve, reject) => {
    connection.query(sql, [], (error, rows) => { if (error === null) resolve(rows ?? []); else reject(error) })
  })
}

/** The server answered with an error of its own (a missing table or variable, a privilege), not a lost connection. */
function serverRefused (error: unknown): boolean {
  const fields = error as { errno?: unknown, fatal?: unknown } | null
  return typeof fields?.errno === 'number' && fields.errno >= 1000 && fields.errno < 5000 && fields.fatal !== true
}

/** SHOW's rows (`Variable_name`, `Value`) as settings. */
function fromShow (rows: Array<Record<string, unknown>>, into: Settings): Settings {
  for (const row of rows) into[String(row.Variable_name).toLowerCase()] = row.Value
  return into
}

async function settingsBySelect (connection: DriverConnection): Promise<Settings> {
  const [row] = await query(connection, isMariaDbServer(connection) === false ? MYSQL : MARIADB)
  return { ...row }
}

async function settingsByShow (connection: DriverConnection): Promise<Settings> {
  const settings = fromShow(await query(connection, SHOW_VARIABLES), {})
  // Without Galera there is no wsrep_on (MySQL) or it is off (MariaDB): no status to read.
  if (on(settings.wsrep_on)) fromShow(await query(connection, SHOW_STATUS), settings)
  return settings
}

/**
 * Asks a new connection's server what it is for `role`: `not-ready` for a Galera node that is not
 * synced in the primary component, `read-only` for a `primary` that takes no writes, else `ok`.
 * Rejects with the driver's error when the server cannot answer.
 */
export async function checkRole (connection: DriverConnection, role: HostRole): Promise<RoleVerdict> {
  let settings: Settings
  try {
    settings = await settingsBySelect(connection)
  } catch (error) {
    if (!serverRefused(error)) throw error
    settings = await settingsByShow(connection)
  }
  return verdictOf(settings, role)
}

/**
 * checkRole, bounded: a server that froze after the handshake (or after answering a statement)
 * must not hold a connect or a request for ever. On expiry it rejects with ETIMEDOUT and
 * destroys the connection.
 */
export function checkRoleWithin (connection: DriverConnection, role: HostRole, timeoutMillis: number): Promise<RoleVerdict> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(Object.assign(new Error(`the server did not answer the role check within ${timeoutMillis} ms`), { code: 'ETIMEDOUT' }))
      connection.destroy()
    }, timeoutMillis)
    // A close in progress must not wait for it: the connection itself is closed by the pool's teardown.
    timer.unref()
    checkRole(connection, role).then(
      (verdict) => { clearTimeout(timer); resolve(verdict) },
      (error: unknown) => { clearTimeout(timer); reject(error) }
    )
  })
}
