import { FST_FORK_SAFE_DB_UNSUPPORTED_VERSION } from '../errors'
import { KnexMySql2Client, KnexRunnerBase } from './knex-parts'
import { socketOf } from './mysql2-parts'
import { installedVersions } from './package-root'
import { ForkSafeTarnPool } from './tarn-pool'
import type { DriverConnection } from './types'

// The plugin extends knex where knex invites it (its mysql2 dialect and runner are classes,
// tarn's pool is a class) and reads a few fields none of the three documents (see
// knex-parts.ts, tarn-pool.ts, mysql2-parts.ts). Each is checked once: knex's and tarn's when
// the plugin registers, mysql2's on the first connection (its fields exist only once one does).
// A release that moves one fails with FST_FORK_SAFE_DB_UNSUPPORTED_VERSION naming all three
// versions, never with a guarantee silently lost.

const KNEX_CLIENT_METHODS = [
  'acquireConnection', 'releaseConnection', 'acquireRawConnection', 'destroyRawConnection', 'validateConnection',
  'cancelQuery', 'checkVersion', 'query', 'runner', 'initializePool', 'getPoolSettings', 'destroy', 'transaction'
] as const
const KNEX_RUNNER_METHODS = ['run', 'query', 'ensureConnection'] as const
const TARN_METHODS = ['numUsed', 'numFree', 'numPendingAcquires', 'numPendingCreates', 'release', 'on', 'acquire', 'destroy'] as const
// What a direct borrow calls: tarn's own steps of an acquire.
const TARN_INNER_METHODS = ['_startReaping', '_destroy', '_tryAcquireOrCreate', '_executeEventHandlers'] as const
const MYSQL2_METHODS = ['ping', 'query', 'connect', 'end', 'destroy', 'on'] as const

function unsupported (what: string): Error {
  return new FST_FORK_SAFE_DB_UNSUPPORTED_VERSION(what, installedVersions())
}

function expectMethods (owner: string, target: unknown, names: readonly string[]): void {
  for (const name of names) {
    if (typeof (target as Record<string, unknown> | undefined)?.[name] !== 'function') throw unsupported(`${owner}.${name}()`)
  }
}

let checkedKnex = false

/** Checks knex's and tarn's parts once per process; throws FST_FORK_SAFE_DB_UNSUPPORTED_VERSION. */
export function checkKnexInternals (): void {
  if (checkedKnex) return
  expectMethods('knex\'s mysql2 client', KnexMySql2Client.prototype, KNEX_CLIENT_METHODS)
  expectMethods('knex\'s runner', KnexRunnerBase.prototype, KNEX_RUNNER_METHODS)
  expectMethods('tarn\'s pool', ForkSafeTarnPool.prototype, TARN_METHODS)
  expectMethods('tarn\'s pool', ForkSafeTarnPool.prototype, TARN_INNER_METHODS)
  checkedKnex = true
}

/** Checks a pool just built (tarn's fields exist only on an instance). */
export function checkPool (pool: ForkSafeTarnPool): void {
  const fields = pool as unknown as Record<string, unknown>
  if (!Array.isArray(fields.used)) throw unsupported('tarn\'s pool.used')
  if (!Array.isArray(fields.free)) throw unsupported('tarn\'s pool.free')
  if (typeof fields.min !== 'number' || typeof fields.max !== 'number') throw unsupported('tarn\'s pool.min / pool.max')
  if (!Array.isArray(fields.pendingAcquires)) throw unsupported('tarn\'s pool.pendingAcquires')
  if (typeof fields.destroyed !== 'boolean' || typeof fields.eventId !== 'number') throw unsupported('tarn\'s pool.destroyed / pool.eventId')
  if (typeof fields.validate !== 'function') throw unsupported('tarn\'s pool.validate()')
}

let checkedConnection = false

/** Checks the first connection mysql2 opened; later ones share its class. */
export function checkDriverConnection (connection: DriverConnection): void {
  if (checkedConnection) return
  expectMethods('mysql2\'s connection', connection, MYSQL2_METHODS)
  const socket = socketOf(connection)
  if (socket === undefined || typeof socket.destroy !== 'function') throw unsupported('mysql2\'s connection.stream')
  if (typeof connection.threadId !== 'number') throw unsupported('mysql2\'s connection.threadId')
  checkedConnection = true
}
