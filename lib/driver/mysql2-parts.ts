import type { DriverConnection, DriverSocket } from './types'

// mysql2's parts the plugin relies on and mysql2 does not document: the socket under a connection,
// the console line it prints after a protocol warning, and whether the server is MariaDB.

interface Mysql2Fields {
  stream?: DriverSocket
}

/** The socket under the connection (undefined only before mysql2 made one). */
export function socketOf (connection: DriverConnection): DriverSocket | undefined {
  return (connection as Mysql2Fields).stream
}

/**
 * mysql2's error for a command given to a connection that has already failed: the command was
 * never written (mysql2 refuses it without touching the socket). Should mysql2 reword it, a
 * transaction's failure errs on the safe side: a COMMIT counts as sent (COMMIT_UNKNOWN, never
 * retried), and the socket check before a COMMIT still catches most lost connections.
 */
export function isClosedStateError (error: unknown): boolean {
  const message = (error as { message?: unknown } | null)?.message
  return message === 'Can\'t add new command when connection is in closed state'
}

/**
 * Calls `handle` with each `warn` a connection emits for a protocol oddity ("packets out of
 * order"). mysql2 then prints the same message with console.error, synchronously, as its next
 * statement: that one console line is swallowed (the console is restored within the same tick
 * whatever happens), since the warning has gone to the logger.
 */
export function onDriverWarning (connection: NodeJS.EventEmitter, handle: (warning: unknown) => void): void {
  connection.on('warn', (warning: unknown) => {
    handle(warning)
    const message = (warning as { message?: unknown } | null)?.message
    if (typeof message === 'string') swallowNextConsoleError(message)
  })
}

function swallowNextConsoleError (message: string): void {
  const original = console.error
  const restore = () => { if (console.error === once) console.error = original }
  const once = (...args: unknown[]) => {
    restore()
    if (!(args.length === 1 && args[0] === message)) original.apply(console, args)
  }
  console.error = once
  queueMicrotask(restore)
}

/**
 * Whether the server said in its handshake that it is MariaDB (mysql2 reads it from the version
 * string); undefined when mysql2 no longer keeps the flag, and the caller must not guess.
 */
export function isMariaDbServer (connection: DriverConnection): boolean | undefined {
  const flag = (connection as { _isMariaDB?: unknown })._isMariaDB
  return typeof flag === 'boolean' ? flag : undefined
}
