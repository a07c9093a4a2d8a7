import type { Knex } from 'knex'

// Which request does a running statement belong to? Listeners on each builder would answer it,
// but they slowed every request in bench/overhead.ts. So the owner is recorded on the builder
// (or on a transaction's client) and read by four listeners on the client, installed once.
// knex emits 'start' (with the builder) and then 'query' (with the connection's uid)
// synchronously, one statement at a time, so the owner seen at 'start' is the owner of the
// next 'query'. (A statement that fails
// to compile after 'start' leaves its owner pending until the next 'start'; at worst a
// transaction's own BEGIN or COMMIT, which has no 'start', is then attributed to it.)

interface QueryEvent {
  __knexUid?: string
  __knexQueryUid?: string
}

/** What an owner is told about its statements. */
export interface StatementOwner {
  /** One of its statements began on the connection knex tagged `connectionUid`. */
  started: (connectionUid: string) => void
  finished: () => void
}

export interface StatementOwners {
  /** Records `owner` for the statements `source` runs: a builder, or a transaction's client. */
  claim: (source: object, owner: StatementOwner) => void
  /** The connections `owner`'s statements are running on now (a rare question: a scan). */
  runningConnections: (owner: StatementOwner) => string[]
}

// A property on the builder rather than a WeakMap entry per builder: ephemeron tables are
// traced on every garbage collection, and a request creates a builder per statement.
const ownerOf = Symbol('fastify-fork-safe-db:statement-owner')
type Owned = { [ownerOf]?: StatementOwner, client?: Owned }

export function trackStatementOwners (client: Knex.Client): StatementOwners {
  // Statements of owners that are running: query uid -> owner, and -> connection uid. Kept
  // here rather than per request, so a request allocates nothing for its statements.
  const running = new Map<string, StatementOwner>()
  const connections = new Map<string, string>()
  let starting: StatementOwner | undefined

  client.on('start', (builder: Owned) => {
    starting = builder[ownerOf] ?? builder.client?.[ownerOf]
  })
  client.on('query', (query: QueryEvent) => {
    const owner = starting
    starting = undefined
    if (owner === undefined || query.__knexQueryUid === undefined || query.__knexUid === undefined) return
    running.set(query.__knexQueryUid, owner)
    connections.set(query.__knexQueryUid, query.__knexUid)
    owner.started(query.__knexUid)
  })
  const finished = (query: QueryEvent) => {
    const uid = query?.__knexQueryUid
    if (uid === undefined || running.size === 0) return
    const owner = running.get(uid)
    if (owner === undefined) return
    running.delete(uid)
    connections.delete(uid)
    owner.finished()
  }
  client.on('query-response', (_response: unknown, query: QueryEvent) => finished(query))
  client.on('query-error', (_error: unknown, query: QueryEvent) => finished(query))

  return {
    claim: (source, owner) => { (source as Owned)[ownerOf] = owner },
    runningConnections (owner) {
      const found = new Set<string>()
      for (const [queryUid, candidate] of running) {
        const connection = connections.get(queryUid)
        if (candidate === owner && connection !== undefined) found.add(connection)
      }
      return [...found]
    }
  }
}
