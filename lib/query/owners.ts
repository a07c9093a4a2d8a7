import type { DriverConnection } from '../driver/types'

// Which request does a running statement belong to? `request.db` marks what it creates (a
// builder, or a transaction's client) with its request's scope; the plugin's runner reads the
// mark when the statement runs, on the connection it runs on. Nothing is inferred from the order
// of knex's events, so a statement that fails to compile, or one knex runs without a 'start'
// event (a stream), can never be credited to another request.

/** A request's scope, as its statements see it. */
export interface StatementOwner {
  /** The client went away: statements not yet sent are not sent at all. */
  readonly clientGone: boolean
  /** Its request's id (Fastify's `request.id`), for events and log lines. */
  readonly requestId: string
  /** Its request's route (`GET /users/:id`), for events and log lines; undefined when no route matched. */
  readonly route: string | undefined
  /** One of its statements began on `connection`. */
  started: (connection: DriverConnection) => void
  finished: (connection: DriverConnection) => void
}

// A property rather than a WeakMap entry per builder: ephemeron tables are traced on every
// garbage collection, and a request creates a builder per statement.
const OWNER = Symbol('fastify-fork-safe-db:statement-owner')
type Marked = { [OWNER]?: StatementOwner }

/** Marks the statements `target` (a builder, or a transaction's client) runs as `owner`'s. */
export function claim (target: object, owner: StatementOwner): void {
  (target as Marked)[OWNER] = owner
}

/** The owner of a statement run by `builder` on `client`, if it has one. */
export function ownerOf (builder: object, client: object): StatementOwner | undefined {
  return (builder as Marked)[OWNER] ?? (client as Marked)[OWNER]
}
