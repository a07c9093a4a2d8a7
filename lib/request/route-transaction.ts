import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { FST_FORK_SAFE_DB_INVALID_OPTION } from '../errors'
import type { RequestScope } from './request-scope'

// `{ db: { transaction: true } }` on a route runs its handler in a transaction: `request.db` is
// the transaction, which begins after the route's other preHandlers (no transaction is opened
// for a request that authentication turns away) and ends in onSend, before a byte of the
// response is written: committed for a 2xx/3xx reply, rolled back for an error. A client can
// therefore never see a success whose commit then failed; a failed commit becomes the error
// response instead. A request turned away before its preHandlers (a 400 from validation, a 404)
// never began one, and its onSend touches nothing: no scope, no pool.

/** The per-route option, under the decorator's name (`db` by default). */
export interface RouteDbOptions {
  /** Run the handler in a transaction that commits on success and rolls back on error. */
  transaction?: boolean
}

type Hook = (request: FastifyRequest, reply: FastifyReply, payload?: unknown) => Promise<unknown>

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

export function addRouteTransactions (fastify: FastifyInstance, decorator: string, scopes: RouteScopes): void {
  fastify.addHook('onRoute', (route) => {
    const option = (route as unknown as Record<string, unknown>)[decorator]
    if (option === undefined) return
    const transaction = (option as RouteDbOptions | null)?.transaction
    if (typeof option !== 'object' || option === null || !(transaction === undefined || typeof transaction === 'boolean') ||
        Object.keys(option).some((key) => key !== 'transaction')) {
      throw new FST_FORK_SAFE_DB_INVALID_OPTION(`route option ${decorator} on ${String(route.method)} ${route.url} must be { transaction?: boolean }, got \`${JSON.stringify(option)}\``)
    }
    if (transaction !== true) return
    const hooks = route as unknown as { preHandler?: unknown, onSend?: unknown }
    hooks.preHandler = appendHook(hooks.preHandler, async (request) => scopes.scopeOf(request).beginRouteTransaction())
    hooks.onSend = appendHook(hooks.onSend, async (request, reply, payload) => {
      await scopes.existingScope(request)?.endRouteTransaction(reply.statusCode < 400)
      return payload
    })
  })
}
