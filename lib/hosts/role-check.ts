import type { DriverConnection } from '../driver/types'
import type { HostRole, RoleVerdict } from './host'

// A minimal stand-in for the "roles" helper's check (the lead keeps theirs at merge): what a
// server says of itself on a new connection. A Galera node takes queries only when ready and
// synced (wsrep_local_state 4, as MaxScale requires); a `primary` registration also needs a
// server that takes writes (`read_only`, and `innodb_read_only` for Aurora readers).

const SYNCED = '4'

function query (connection: DriverConnection, sql: string): Promise<Array<Record<string, unknown>>> {
  return new Promise((resolve, reject) => {
    connection.query(sql, [], (error, rows) => { if (error === null) resolve(rows as Array<Record<string, unknown>>); else reject(error) })
  })
}

export async function checkRole (connection: DriverConnection, role: HostRole): Promise<RoleVerdict> {
  const status = await query(connection, 'SHOW GLOBAL STATUS WHERE Variable_name IN (\'wsrep_ready\', \'wsrep_local_state\')')
  const wsrep = new Map(status.map((row) => [String(row.Variable_name).toLowerCase(), String(row.Value)]))
  // A server without Galera reports wsrep_ready OFF and no wsrep_local_state.
  if (wsrep.has('wsrep_local_state') && (wsrep.get('wsrep_ready') !== 'ON' || wsrep.get('wsrep_local_state') !== SYNCED)) return 'not-ready'
  if (role === 'any') return 'ok'
  const [flags] = await query(connection, 'SELECT @@global.read_only AS readOnly, @@global.innodb_read_only AS innodbReadOnly')
  return Number(flags.readOnly) !== 0 || Number(flags.innodbReadOnly) !== 0 ? 'read-only' : 'ok'
}
