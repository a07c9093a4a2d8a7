import type { ConnectionOptions } from 'mysql2'
import { FST_FORK_SAFE_DB_INVALID_CONNECTION } from '../errors'

// Several hosts in one URL, as Connector/J and libpq write them:
// `mysql://user:password@h1:3306,h2:3307,[::1]:3308/db?...`. WHATWG's URL parser refuses a comma
// in the host, so the authority is split here, and each host becomes a URL of its own with the
// same credentials, path and query: each is then checked like a one-host URL, with the same
// messages. Nothing here echoes the user information (the password lives there).

/** One host of a registration: its own checked mysql2 settings, and a label safe for logs. */
export interface ResolvedHost {
  /** Its position in the registration's list (0 with one host). */
  readonly index: number
  /** `host:port` (`[v6]:port`), or the socket path; for a connection function, of its latest result. */
  label: string
  /** What mysql2 gets for this host; undefined for a connection function (its latest result applies). */
  readonly settings: ConnectionOptions | undefined
}

const AUTHORITY = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#]*)(.*)$/s

/** The one-host URLs a URL with several comma-separated hosts stands for; undefined for a one-host URL. */
export function splitHostList (text: string): string[] | undefined {
  const match = AUTHORITY.exec(text)
  if (match === null) return undefined
  const [, scheme, authority, rest] = match
  const at = authority.lastIndexOf('@')
  const userInfo = at === -1 ? '' : authority.slice(0, at + 1)
  const hostList = authority.slice(at + 1)
  if (!hostList.includes(',')) return undefined
  const hosts = hostList.split(',')
  if (hosts.some((host) => host.trim() === '')) {
    throw new FST_FORK_SAFE_DB_INVALID_CONNECTION(`connection URL must list hosts separated by single commas (mysql://user:password@host1:3306,host2:3306/database), got the host list \`${hostList}\``)
  }
  return hosts.map((host) => `${scheme}${userInfo}${host.trim()}${rest}`)
}

/** `host:port` or the socket path: what names a host in logs, events and `stats().hosts`. */
export function hostLabel (settings: ConnectionOptions): string {
  if (settings.socketPath !== undefined) return settings.socketPath
  const host = settings.host ?? 'localhost'
  return `${host.includes(':') ? `[${host}]` : host}:${settings.port ?? 3306}`
}
