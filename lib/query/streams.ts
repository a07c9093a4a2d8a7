import type { Readable } from 'node:stream'
import { discard } from '../driver/discard'
import type { DriverConnection } from '../driver/types'
import { FST_FORK_SAFE_DB_CLIENT_GONE } from '../errors'
import type { StatementOwner } from './owners'

// A streamed statement (`.stream()`, `.pipe()`) does not pass through the runner's query(): knex
// runs it through its stream callback on the connection the runner acquired. So it is recorded
// here as its request's running statement, like any other: a client that hangs up gets it
// cancelled on the server (KILL QUERY), and one that has already gone never sends it.
//
// A stream closed before its last row (destroyed by a consumer that gave up, or by Fastify when
// the client hung up) leaves mysql2 mid-result on a paused socket: the statement is still
// sending rows, the connection reads none, and the next command on it (the transaction's
// ROLLBACK, or the next borrower's query) would wait behind it for ever. Such a connection is
// closed: the server drops the statement (and rolls back a transaction) when it goes. A stream
// piped into a consumer of the user's is not always closed with it (pipe() does not pass a
// destroy upstream), so a hang-up also stops the stream itself (stopStream()).

/** knex's stream of the statement streaming on each connection now. */
const streaming = new WeakMap<DriverConnection, Readable>()

/** Stops the stream running on `connection`, if one is (its connection is then closed, as above). */
export function stopStream (connection: DriverConnection, reason: Error): void {
  streaming.get(connection)?.destroy(reason)
}

/**
 * Runs knex's stream callback `run` for `owner`'s statement on `connection`, watching its stream.
 * `refused`: why the statement must not be sent at all (its transaction's connection was closed
 * by a timeout: mysql2 would report that on the connection, never on the stream, which would
 * then wait for ever).
 */
export async function watchStream<T> (connection: DriverConnection, owner: StatementOwner | undefined, stream: Readable, run: () => Promise<T>, refused?: Error): Promise<T> {
  const refusal = refused ?? (owner?.clientGone === true ? new FST_FORK_SAFE_DB_CLIENT_GONE() : undefined)
  if (refusal !== undefined) {
    stream.destroy(refusal)
    throw refusal
  }
  let finished = false
  const finish = () => { finished = true }
  const cutShort = () => { if (!finished) discard(connection, new Error('the stream was closed before its last row')) }
  stream.once('end', finish)
  stream.once('error', finish)
  stream.once('close', cutShort)
  streaming.set(connection, stream)
  owner?.started(connection)
  try {
    return await run()
  } finally {
    streaming.delete(connection)
    owner?.finished(connection)
  }
}
