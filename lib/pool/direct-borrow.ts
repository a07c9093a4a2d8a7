import { validationIsBounded } from '../driver/knex-parts'
import type { DialectClient, DriverConnection } from '../driver/types'
import type { BorrowCheck } from './borrow-check'

// tarn lends every connection through its queue of waiting acquires, even when a free one is
// there and nobody waits: each acquire builds two pending operations (a deferred, a setTimeout of
// the acquire deadline and its clearTimeout each) and about a dozen promises around one check,
// more work than all of the plugin's guarantees together (bench:instructions).
//
// So when a connection is free, no acquire waits ahead, and its check cannot wait on anything
// unbounded, the plugin's tarn pool lends it without the queue, doing what tarn's acquire does
// with it (driver/tarn-pool.ts): the same connection (the last released), moved to the borrowed
// list before its check, the same check (knex's `pool.validate`, which ends in the borrow
// check), the same events with the same ids, and, when the check fails, the same destruction
// before the borrow starts again. The queue stays tarn's: a borrow that must wait for a
// connection, or for a new one, goes through it, with its deadline.
//
// Bounded means: the borrow check's answer takes at most its socket check's event-loop turns (no
// ping due or in flight), and knex's validation runs no user code (a `pool.validate`, a
// connection function's expiry check). Whatever else waits, tarn's acquire deadline must bound it.
// (A connection that reaches `pingAfterIdleMillis` between this look and its check is pinged all
// the same, within the ping's own timeout, at most half the acquire deadline.)

/** Whether a free connection of `client`'s pool may be lent without tarn's queue (made once per pool). */
export function mayLendDirectly (clientOf: () => DialectClient | undefined, borrowCheck: BorrowCheck): (connection: DriverConnection) => boolean {
  return (connection) => {
    const client = clientOf()
    return client !== undefined && borrowCheck.answersWithoutRoundTrip(connection) && validationIsBounded(client)
  }
}
