import { subscribe } from 'node:diagnostics_channel'
import type { FastifyInstance, RouteOptions } from 'fastify'
import { FST_FORK_SAFE_DB_ROUTE_OPTION_UNCLAIMED } from '../errors'
import { runInTransaction, wantsTransaction, type RouteScopes, type TransactionSlot } from './route-transaction'

// A route option (`{ db: { transaction: true } }`) reaches only the onRoute hooks that exist when
// the route is declared. A plugin's own hook exists once the plugin has loaded, and Fastify loads
// a plugin whose register() was not awaited later, after the routes declared below it (Fastify's
// own docs write it that way): their option would be silently ignored, and a malformed one
// accepted. So the plugin also watches every route from the instance's creation on, through
// Fastify's documented `fastify.initialization` channel (published inside `fastify()`), with an
// onRoute hook on the root:
// - a route whose option names a registration already loaded in its context is set up at once;
// - one declared before its registration loaded is set up there and then too (onRoute is where
//   a route's hooks and handler may still change), inert until the registration claims it as it
//   loads: checked (a malformed value fails ready()), then live;
// - at onReady, a route whose option no registration claimed (none in its encapsulation context,
//   or none under that decorator name) fails ready() with FST_FORK_SAFE_DB_ROUTE_OPTION_UNCLAIMED.
// An instance created before this module was loaded (a plugin loaded lazily) has no watch: its
// registrations set up the routes declared after them, as Fastify's onRoute does.

/** A route whose option names a decorator no registration had claimed when it was declared. */
interface PendingRoute {
  readonly instance: FastifyInstance
  readonly route: RouteOptions
  readonly key: string
  readonly slot: TransactionSlot
}

interface Registration {
  readonly instance: FastifyInstance
  readonly decorator: string
  readonly scopes: RouteScopes
}

/** Every route option and registration of one Fastify application (its root instance). */
class RouteWatch {
  readonly registrations: Registration[] = []
  pending: PendingRoute[] = []

  /** Fastify's onRoute, on the root: every route of the application, at its declaration. */
  declared (instance: FastifyInstance, route: RouteOptions): void {
    for (const key of candidateKeys(route)) {
      const registration = this.registrations.find((r) => r.decorator === key && covers(r.instance, instance))
      if (registration !== undefined) {
        if (wantsTransaction(route, key)) runInTransaction(route, { scopes: registration.scopes, enabled: true })
        continue
      }
      const slot: TransactionSlot = { scopes: undefined, enabled: false }
      runInTransaction(route, slot)
      this.pending.push({ instance, route, key, slot })
    }
  }

  /** A registration loaded on `instance`: it takes the routes of its context declared before it. */
  registered (registration: Registration): void {
    this.registrations.push(registration)
    const mine = this.pending.filter((p) => p.key === registration.decorator && covers(registration.instance, p.instance))
    this.pending = this.pending.filter((p) => !mine.includes(p))
    for (const { route, key, slot } of mine) {
      slot.enabled = wantsTransaction(route, key)
      slot.scopes = registration.scopes
    }
  }

  /** Fastify's onReady: a route option nobody claimed is refused. */
  check (): void {
    // Not ours to judge in an application that never registered the plugin.
    if (this.registrations.length === 0 || this.pending.length === 0) return
    const names = this.registrations.map((r) => r.decorator)
    const routes = [...new Set(this.pending.map(({ route, key }) => `${String(route.method)} ${route.url} (${key})`))].join(', ')
    throw new FST_FORK_SAFE_DB_ROUTE_OPTION_UNCLAIMED(routes, names.map((name) => `"${name}"`).join(', '))
  }
}

const watches = new WeakMap<FastifyInstance, RouteWatch>()

subscribe('fastify.initialization', (message) => {
  const fastify = (message as { fastify?: FastifyInstance }).fastify
  if (fastify === undefined || watches.has(fastify)) return
  const watch = new RouteWatch()
  watches.set(fastify, watch)
  fastify.addHook('onRoute', function watchRouteOptions (this: FastifyInstance, route) { watch.declared(this, route) })
  fastify.addHook('onReady', function checkRouteOptions (done) {
    try {
      watch.check()
      done()
    } catch (error) {
      done(error as Error)
    }
  })
})

/**
 * Sets up the route options of a registration under `decorator` on `fastify`: those declared
 * before it loaded (when the application is watched) and those declared from now on.
 */
export function addRouteTransactions (fastify: FastifyInstance, decorator: string, scopes: RouteScopes): void {
  const watch = watchOf(fastify)
  if (watch !== undefined) {
    watch.registered({ instance: fastify, decorator, scopes })
    return
  }
  fastify.addHook('onRoute', (route) => {
    if (wantsTransaction(route, decorator)) runInTransaction(route, { scopes, enabled: true })
  })
}

/** The watch of the application `instance` belongs to (a child instance inherits from its parent). */
function watchOf (instance: FastifyInstance): RouteWatch | undefined {
  for (let current: object | null = instance; current !== null; current = Object.getPrototypeOf(current) as object | null) {
    const watch = watches.get(current as FastifyInstance)
    if (watch !== undefined) return watch
  }
  return undefined
}

/** Whether a registration on `owner` reaches routes declared on `instance` (itself or a child context). */
function covers (owner: FastifyInstance, instance: FastifyInstance): boolean {
  return owner === instance || Object.prototype.isPrototypeOf.call(owner, instance)
}

// Fastify's own route options: never one of ours, whatever they hold.
const FASTIFY_KEYS = new Set([
  'method', 'url', 'path', 'handler', 'schema', 'attachValidation', 'exposeHeadRoute', 'onRequest', 'onResponse',
  'onTimeout', 'onError', 'onSend', 'preHandler', 'preParsing', 'preSerialization', 'preValidation', 'onRequestAbort',
  'errorHandler', 'childLoggerFactory', 'validatorCompiler', 'serializerCompiler', 'schemaErrorFormatter', 'bodyLimit',
  'logLevel', 'logSerializers', 'config', 'version', 'constraints', 'prefixTrailingSlash', 'routePath', 'prefix',
  'handlerTimeout', 'websocket', 'wsHandler'
])

/**
 * The keys of `route` that may be a registration's option before the registration is known:
 * `db` (the default decorator) whatever its value, and any other key that holds `transaction`.
 */
function candidateKeys (route: RouteOptions): string[] {
  const keys: string[] = []
  for (const [key, value] of Object.entries(route)) {
    if (FASTIFY_KEYS.has(key) || value === undefined) continue
    if (key === 'db' || (typeof value === 'object' && value !== null && Object.hasOwn(value, 'transaction'))) keys.push(key)
  }
  return keys
}
