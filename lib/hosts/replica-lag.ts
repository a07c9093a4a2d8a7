import type { DriverConnection } from '../driver/types'

// How far a server is behind its primary, as the server itself says: the replica status's
// `Seconds_Behind_Master` (MariaDB, MySQL before 8.0.22) or `Seconds_Behind_Source` (MySQL
// 8.0.22 on). The statement depends on the server, so the reader tries them newest first and
// keeps the first one the server parses:
// - `SHOW ALL REPLICAS STATUS` (MariaDB 10.5.1 on) lists every connection of a multi-source
//   replica; a plain `SHOW REPLICA STATUS` on MariaDB shows only the default connection;
// - `SHOW REPLICA STATUS` (MySQL 8.0.22 on) has one row per channel;
// - `SHOW ALL SLAVES STATUS` (older MariaDB), then `SHOW SLAVE STATUS` (older MySQL).
// What the rows mean:
// - no row: the server replicates from nothing. A primary listed among the replicas never lags: 0;
// - a NULL lag: the SQL or the IO thread is stopped, so the server applies nothing and its lag
//   is unknown and growing: Infinity;
// - several rows (channels): the worst one, since a read may touch any channel's data.

const STATEMENTS = ['SHOW ALL REPLICAS STATUS', 'SHOW REPLICA STATUS', 'SHOW ALL SLAVES STATUS', 'SHOW SLAVE STATUS'] as const
const LAG_COLUMNS = ['Seconds_Behind_Master', 'Seconds_Behind_Source'] as const
/** ER_PARSE_ERROR: the server does not know this form. */
const ER_PARSE_ERROR = 1064

type Row = Record<string, unknown>

/** The lag of one channel's row: seconds, or Infinity when it is not replicating. */
export function lagOfRow (row: Row): number {
  for (const column of LAG_COLUMNS) {
    if (!(column in row)) continue
    const value = row[column]
    if (value === null || value === undefined) return Number.POSITIVE_INFINITY
    const seconds = Number(value)
    return Number.isFinite(seconds) && seconds >= 0 ? seconds : Number.POSITIVE_INFINITY
  }
  // A status without a lag column is not one we can read: treat it as not replicating.
  return Number.POSITIVE_INFINITY
}

/** The worst channel's lag; 0 when the server is not a replica at all. */
export function lagOfRows (rows: readonly Row[]): number {
  let worst = 0
  for (const row of rows) worst = Math.max(worst, lagOfRow(row))
  return worst
}

function run (connection: DriverConnection, sql: string): Promise<Row[]> {
  return new Promise((resolve, reject) => {
    connection.query(sql, [], (error, rows) => { if (error === null) resolve(rows ?? []); else reject(error) })
  })
}

/** Reads a server's replication lag; one reader per server remembers which statement it parses. */
export class ReplicaLagReader {
  #statement = 0

  /** Seconds behind the primary (worst channel), Infinity when not replicating, 0 for a primary. */
  async read (connection: DriverConnection): Promise<number> {
    for (;;) {
      try {
        return lagOfRows(await run(connection, STATEMENTS[this.#statement]))
      } catch (error) {
        if ((error as { errno?: unknown }).errno !== ER_PARSE_ERROR || this.#statement === STATEMENTS.length - 1) throw error
        this.#statement += 1
      }
    }
  }
}
