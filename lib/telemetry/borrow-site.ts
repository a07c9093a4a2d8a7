import { join, sep } from 'node:path'

// Where the code that borrowed a connection was (leak detection). knex borrows later, from its
// own frames (a builder's `then`, a transaction's container), so the stack is captured where the
// builder, raw or transaction is created: `db('users')`, `db.raw()`, `db.transaction()` call the
// client synchronously from the user's code. An Error is kept, not its text: V8 records the
// frames when the Error is made and formats them only when `.stack` is read, which happens only
// for a holder that is reported or listed. Its depth is the process's `Error.stackTraceLimit`.

const SITE = Symbol('fastify-fork-safe-db:borrow-site')
type Marked = { [SITE]?: Error }

// The plugin's own files (lib/ under ts-jest, dist/ when installed) and knex's sit above the
// user's first frame: they say nothing about who borrowed.
const OWN_ROOT = join(__dirname, '..') + sep
const KNEX_ROOT = `${sep}node_modules${sep}knex${sep}`
// A frame with no file of its own (`new Promise (<anonymous>)`) or Node's own.
const NO_SOURCE = /\((<anonymous>|native)\)$|\(node:/

/** Records the current stack as the borrow site of `target` (a builder, a raw, or a transaction's client). */
export function markBorrowSite (target: object, site: Error = new Error('borrowed here')): object {
  (target as Marked)[SITE] = site
  return target
}

/** A borrow site captured now, to be marked on something made later (a transaction's client). */
export function captureBorrowSite (): Error {
  return new Error('borrowed here')
}

/** The stack recorded for `target`, from the borrower's first frame; undefined when none was. */
export function borrowStackOf (target: object | undefined): string | undefined {
  const site = target === undefined ? undefined : (target as Marked)[SITE]
  if (site === undefined) return undefined
  const frames = (site.stack ?? '').split('\n').slice(1)
  const first = frames.findIndex((frame) => !frame.includes(OWN_ROOT) && !frame.includes(KNEX_ROOT) && !NO_SOURCE.test(frame))
  return (first === -1 ? frames : frames.slice(first)).join('\n')
}
