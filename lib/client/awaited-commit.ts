import type { Knex } from 'knex'

// knex's `await trx.commit()` resolves even when the COMMIT fails: only `trx.executionPromise`
// rejects. A transaction from the promise form (`const trx = await db.transaction()`) whose
// connection is lost at its COMMIT would look committed to code that awaits `commit()` alone,
// and that is the case a failover makes common. On such a transaction `commit()` rejects with the
// transaction's outcome (FST_FORK_SAFE_DB_TRANSACTION_ABORTED, _COMMIT_UNKNOWN, or the COMMIT's
// own error), the same value as `executionPromise`. The callback form is left as knex makes it:
// knex commits it itself, and its promise already carries the outcome.

type Committable = { commit: (value?: unknown) => PromiseLike<unknown> }

/** Makes `trx.commit()` reject when the COMMIT fails; returns `trx`. */
export function rejectingCommit (trx: Knex.Transaction): Knex.Transaction {
  const committable = trx as unknown as Committable
  const commit = committable.commit
  // knex settles executionPromise before commit()'s own promise resolves: it is settled here.
  committable.commit = (value?: unknown) => Promise.resolve(commit(value)).then((result) => trx.executionPromise.then(() => result))
  return trx
}
