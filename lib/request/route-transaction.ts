import { pipeline, Readable, Transform } from 'node:stream'
import type { ReadableStream } from 'node:stream/web'
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import { FST_FORK_SAFE_DB_INVALID_OPTION, FST_FORK_SAFE_DB_ROUTE_TRANSACTION_PAYLOAD } from '../errors'
import type { RequestScope } from './request-scope'

// `{ db: { transaction: true } }` on a route runs its handler in a transaction: `request.db` is
// the transaction, which begins after the route's other preHandlers (no transaction is opened
// for a request that authentication turns away). It ends before the client can see a success:
// - a payload (an object, a string, a buffer) is committed in onSend, before a byte of the
//   response is written; a failed COMMIT becomes the error response;
// - a stream (rows read on the transaction itself, which a COMMIT in onSend would queue behind
//   and wait for forever) is sent as it comes, and committed after its last chunk, before the
//   response's end: a failed COMMIT aborts the response, so the client sees an incomplete body,
//   never a complete one. A stream that fails, or a client that hangs up, rolls back;
// - a hijacked reply (the handler writes the response itself; Fastify skips onSend) is committed
//   when the handler resolves and rolled back when it throws. The handler may have written its
//   answer by then: a client of a hijacked reply can see a success whose COMMIT then failed;
// - a web ReadableStream is sent as a Node stream, as above; a fetch `Response` object (status,
//   headers and body that Fastify applies after onSend) is refused with
//   FST_FORK_SAFE_DB_ROUTE_TRANSACTION_PAYLOAD, and rolled back, rather than committed blind.
// An error status, or a thrown error, rolls back. A request turned away before its preHandlers
// (a 400 from validation, a 404) never began one, and its onSend touches nothing.

/** The per-route option, under the decorator's name (`db` by default). */
export interface RouteDbOptions {
  /** Run the handler in a transaction that commits on success and rolls back on error. */
  transaction?: boolean
}

type Hook = (request: FastifyRequest, reply: FastifyReply, payload?: unknown) => Promise<unknown>
type Handler = (this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) => unknown

/** Route hooks may be one function or an array; ours goes last either way. */
function appendHook (existing: unknown, hook: Hook): unknown[] {
  if (existing === undefined) return [hook]
  return Array.isArray(existing) ? [...existing, hook] : [existing, hook]
}

export interface RouteScopes {
  /** The request's scope, made on first use. */
  scopeOf: (request: FastifyRequest) => RequestScope
  /** The request's scope if it has one. */
  existingScope: (request: FastifyRequest) => RequestScope | null
}

/** Checks the route option; true when the route asks for a transaction. */
export function wantsTransaction (route: RouteOptions, decorator: string): boolean {
  const option = (route as unknown as Record<string, unknown>)[decorator]
  if (option === undefined) return false
  const transaction = (option as RouteDbOptions | null)?.transaction
  if (typeof option !== 'object' || option === null || !(transaction === undefined || typeof transaction === 'boolean') ||
      Object.keys(option).some((key) => key !== 'transaction')) {
    throw new FST_FORK_SAFE_DB_INVALID_OPTION(`route option ${decorator} on ${String(route.method)} ${route.url} must be { transaction?: boolean }, got \`${JSON.stringify(option)}\``)
  }
  return transaction === true
}

/**
 * Where a route's transaction hooks find their registration: set when the route is declared, or
 * later, when a registration loaded after the route's declaration claims it (route-options.ts).
 * Until then, or when the route turned out not to want a transaction, the hooks do nothing.
 */
export interface TransactionSlot {
  scopes: RouteScopes | undefined
  enabled: boolean
}

/** Makes `route` run its handler in a transaction, once `slot` is enabled. Call from onRoute. */
export function runInTransaction (route: RouteOptions, slot: TransactionSlot): void {
  const active = () => slot.enabled ? slot.scopes : undefined
  const hooks = route as unknown as { preHandler?: unknown, onSend?: unknown }
  hooks.preHandler = appendHook(hooks.preHandler, async (request) => active()?.scopeOf(request).beginRouteTransaction())
  hooks.onSend = appendHook(hooks.onSend, async (request, reply, payload) => {
    const scope = active()?.existingScope(request) ?? null
    if (scope === null) return payload
    const commit = reply.statusCode < 400
    if (isReadable(payload)) return endAfter(payload, scope, commit)
    if (isWebStream(payload)) return endAfter(Readable.fromWeb(payload), scope, commit)
    if (isFetchResponse(payload)) {
      await scope.endRouteTransaction(false)
      throw new FST_FORK_SAFE_DB_ROUTE_TRANSACTION_PAYLOAD(`${request.method} ${request.routeOptions.url ?? request.url}`, 'a fetch Response object')
    }
    await scope.endRouteTransaction(commit)
    return payload
  })
  route.handler = endingWhenHijacked(route.handler as Handler, active)
}

function isReadable (payload: unknown): payload is Readable {
  return typeof (payload as Readable | null)?.pipe === 'function' && typeof (payload as Readable).on === 'function'
}

function isWebStream (payload: unknown): payload is ReadableStream {
  return typeof (payload as ReadableStream | null)?.getReader === 'function'
}

// As Fastify recognises one, realm-independent.
function isFetchResponse (payload: unknown): boolean {
  return typeof payload === 'object' && payload !== null && Object.prototype.toString.call(payload) === '[object Response]'
}

/**
 * `payload`, passed through unchanged, with the transaction ended after its last chunk and
 * before the response's end (a Transform's flush runs before it ends its readable side).
 */
function endAfter (payload: Readable, scope: RequestScope, commit: boolean): Readable {
  const ending = new Transform({
    objectMode: true,
    transform (chunk, _encoding, done) { done(null, chunk) },
    flush (done) { scope.endRouteTransaction(commit).then(() => done(), done) }
  })
  // A source that fails, or a response closed early (Fastify destroys its payload), rolls back.
  pipeline(payload, ending, (error) => {
    if (error !== null && error !== undefined) scope.endRouteTransaction(false).catch(() => {})
  })
  return ending
}

/**
 * The handler, ending the transaction itself when the reply was hijacked (or written on
 * `reply.raw` directly), since Fastify then skips onSend. A handler that does not return a
 * promise keeps returning what it returns, so callback-style handlers behave as before.
 */
function endingWhenHijacked (handler: Handler, active: () => RouteScopes | undefined): Handler {
  const end = (request: FastifyRequest, reply: FastifyReply, commit: boolean): Promise<void> => {
    const scope = reply.sent ? active()?.existingScope(request) ?? null : null
    return scope === null ? Promise.resolve() : scope.endRouteTransaction(commit)
  }
  return function routeTransactionHandler (this: FastifyInstance, request, reply) {
    const result = handler.call(this, request, reply)
    if (typeof (result as Promise<unknown> | null)?.then === 'function') {
      return (result as Promise<unknown>).then(
        async (value) => { await end(request, reply, true); return value },
        async (error: unknown) => { await end(request, reply, false).catch(() => {}); throw error }
      )
    }
    // Hijacked synchronously: Fastify ignores what a hijacked handler's promise resolves to.
    return reply.sent ? end(request, reply, true) : result
  }
}
