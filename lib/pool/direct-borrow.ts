import { dropTaken, lendTaken, nextFree, takeFree, validateAsTarn, validationIsBounded, type DialectClient, type DriverConnection, type TarnPool } from '../driver/internals'
import type { ClientRuntime } from '../driver/runtime'

// tarn lends every connection through its queue of waiting acquires, even when a free one is
// there and nobody waits: each acquire builds two pending operations (a deferred, a setTimeout of
// the acquire deadline and its clearTimeout each) and about a dozen promises around one check.
// bench:instructions counted that at about 25k instructions per request, more than all of the
// plugin's guarantees together.
//
// So when a connection is free, no acquire waits ahead, and its check cannot wait on anything
// unbounded, the plugin lends it without the queue, doing what tarn's acquire does with it:
// the same connection (the last released), moved to the borrowed list before its check, the same
// check (knex's `pool.validate`, which ends in the borrow check), the same events with the same
// ids, and, when the check fails, the same destruction before the borrow starts again. The queue
// stays tarn's: a borrow that must wait for a connection, or for a new one, goes through it, with
// its deadline.
//
// Bounded means: the borrow check's answer takes at most its socket check's event-loop turns (no
// ping due or in flight), and knex's validation runs no user code (a `pool.validate`, a
// connection function's expiry check). Whatever else waits, tarn's acquire deadline must bound it.
// (A connection that reaches `pingAfterIdleMillis` between this look and its check is pinged all
// the same, within the ping's own timeout, at most half the acquire deadline.)

/** A connection from `pool` for `client`: lent directly when it can be, else through tarn's queue. */
export function lend (client: DialectClient, pool: TarnPool, runtime: ClientRuntime): Promise<DriverConnection> {
  return lendDirectly(client, pool, runtime) ?? pool.acquire().promise
}

function lendDirectly (client: DialectClient, pool: TarnPool, runtime: ClientRuntime): Promise<DriverConnection> | undefined {
  const next = nextFree(pool)
  if (next === undefined || !runtime.borrowCheck.answersWithoutRoundTrip(next) || !validationIsBounded(client)) return undefined
  const taken = takeFree(pool)
  const failed = (): Promise<DriverConnection> => {
    dropTaken(pool, taken)
    return lend(client, pool, runtime)
  }
  let verdict: unknown
  try {
    verdict = validateAsTarn(pool, taken.connection)
  } catch {
    // tarn counts a check that throws as failed (knex's is async and rejects instead).
    return failed()
  }
  // tarn lends on any truthy answer.
  return Promise.resolve(verdict).then((valid) => valid ? lendTaken(pool, taken) : failed(), failed)
}
