import type {
  ContextConfigDefault, FastifyBaseLogger, FastifyPluginAsync, FastifyRequest, FastifySchema, FastifyTypeProvider,
  FastifyTypeProviderDefault, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerBase, RawServerDefault,
  RouteGenericInterface
} from 'fastify'
import fp from 'fastify-plugin'
import type { Knex } from 'knex'
import * as errors from './errors'
import { channels } from './events/channels'
import { tracingChannels } from './events/tracing'
import { checkKnexInternals } from './driver/versions'
import { ForkSafePool, type RefreshResult } from './lifecycle/fork-safe-pool'
import { recordRegistration, registrationNamed } from './lifecycle/registrations'
import { computeBudget } from './pool/budget'
import { resolveOptions, type ForkSafeDbOptions } from './options/resolve-options'
import type { ForkSafeDbStats } from './pool/stats'
import { RequestScope, type ScopeResponse } from './request/request-scope'
import { addRouteTransactions } from './request/route-options'
import type { RouteDbOptions } from './request/route-transaction'

declare module 'fastify' {
  interface FastifyInstance {
    /** This process's knex instance (fork-safe, lazily built). Renamed by the `decorator` option. */
    db: Knex
    /** Stats and health of `db`'s pool in this process. Named `<decorator>Pool`. */
    dbPool: ForkSafeDbManager
  }
  interface FastifyRequest {
    /**
     * This process's knex instance, scoped to the request: its statements are cancelled if the
     * client disconnects, and transactions left open when the response ends are rolled back.
     * Inside a `{ db: { transaction: true } }` route it is the route's transaction.
     * Renamed by the `decorator` option.
     */
    db: Knex
  }
  // The type parameters must repeat Fastify's exactly for the interfaces to merge.
  interface RouteShorthandOptions<
    /* eslint-disable @typescript-eslint/no-unused-vars */
    RawServer extends RawServerBase = RawServerDefault,
    RawRequest extends RawRequestDefaultExpression<RawServer> = RawRequestDefaultExpression<RawServer>,
    RawReply extends RawReplyDefaultExpression<RawServer> = RawReplyDefaultExpression<RawServer>,
    RouteGeneric extends RouteGenericInterface = RouteGenericInterface,
    ContextConfig = ContextConfigDefault,
    SchemaCompiler extends FastifySchema = FastifySchema,
    TypeProvider extends FastifyTypeProvider = FastifyTypeProviderDefault,
    Logger extends FastifyBaseLogger = FastifyBaseLogger
    /* eslint-enable @typescript-eslint/no-unused-vars */
  > extends ForkSafeDbRouteOptions {}
}

// knex's own transaction options gain the plugin's `retries`: `db.transaction(fn, { retries: 3 })`.
declare module 'knex' {
  namespace Knex {
    interface TransactionConfig {
      /**
       * fastify-fork-safe-db: run the callback again, up to this many more times (0 to 10), when
       * the transaction fails with FST_FORK_SAFE_DB_TRANSACTION_ABORTED (nothing was committed),
       * after a jittered back-off. Only with a callback, on a top-level transaction.
       */
      retries?: number
    }
  }
}

/**
 * The route options of the plugin's registrations, one per decorator: `db` for the default one.
 * A second registration's key is added by augmenting this interface (no type parameters to
 * repeat): `declare module 'fastify-fork-safe-db' { interface ForkSafeDbRouteOptions { replica?: RouteDbOptions } }`.
 */
export interface ForkSafeDbRouteOptions {
  /** `{ transaction: true }` runs the handler in a transaction (keyed by the `decorator` option's name). */
  db?: RouteDbOptions
}

/** Stats and health of one registration's pool in the current process. */
export interface ForkSafeDbManager {
  /** Counts and timings of this process's pool (see ForkSafeDbStats). Cheap: reads counters. */
  stats: () => ForkSafeDbStats
  /**
   * Borrows a connection and pings it within a short deadline; resolves true when the database
   * answers, false otherwise (never rejects). For readiness probes and @fastify/under-pressure.
   */
  check: () => Promise<boolean>
  /**
   * Replaces every connection of this process's pool (HikariCP's soft eviction, Rails'
   * `recycle!`): idle ones are closed at once, busy ones when released (a transaction finishes
   * first), and new ones opened, for a DNS name or VIP that now points elsewhere. No query fails
   * for it. Resolves once every old connection is closed and the pool is back at `pool.min`.
   */
  refresh: () => Promise<RefreshResult>
}

const PLUGIN_NAME = 'fastify-fork-safe-db'
const RETRY_AFTER_SECONDS = '1'
const RETRYABLE = new Set([
  'FST_FORK_SAFE_DB_POOL_SATURATED', 'FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT', 'FST_FORK_SAFE_DB_QUERY_TIMEOUT', 'FST_FORK_SAFE_DB_UNAVAILABLE',
  'FST_FORK_SAFE_DB_CLOSE_TIMEOUT', 'FST_FORK_SAFE_DB_CONNECT_TIMEOUT', 'FST_FORK_SAFE_DB_CONNECT_REFUSED', 'FST_FORK_SAFE_DB_CONNECTION_LOST',
  'FST_FORK_SAFE_DB_DEADLOCK', 'FST_FORK_SAFE_DB_LOCK_WAIT_TIMEOUT', 'FST_FORK_SAFE_DB_READ_ONLY', 'FST_FORK_SAFE_DB_NODE_NOT_READY',
  'FST_FORK_SAFE_DB_TRANSACTION_ABORTED', 'FST_FORK_SAFE_DB_REPLICA_LAG'
])

const forkSafeDbPlugin: FastifyPluginAsync<ForkSafeDbOptions> = async (fastify, rawOptions) => {
  // A knex or tarn that moved a part the plugin relies on fails here, before anything is built.
  checkKnexInternals()
  // Validate before anything else: a bad option must fail registration, before any socket opens.
  const options = resolveOptions(rawOptions)
  const { decorator } = options
  const managerName = `${decorator}Pool`
  if (fastify.hasDecorator(decorator) || fastify.hasRequestDecorator(decorator) || fastify.hasDecorator(managerName)) {
    throw new errors.FST_FORK_SAFE_DB_ALREADY_REGISTERED(decorator)
  }

  const log = fastify.log.child({ plugin: PLUGIN_NAME, decorator })
  const pool = new ForkSafePool(options, log)

  // Getters, not values: every access re-checks the pid, and a knex instance (a function)
  // given as a request decorator value would be bound as a method. A request's scope is made on
  // its first access to the decorator and kept in a slot declared up front (a stable shape).
  const scopeSlot = Symbol(`${PLUGIN_NAME}:${decorator}`)
  const responseSlot = Symbol(`${PLUGIN_NAME}:${decorator}:response`)
  type Scoped = FastifyRequest & { [scopeSlot]: RequestScope | null, [responseSlot]: ScopeResponse | null }
  const responseOf = (request: FastifyRequest) => (request as Scoped)[responseSlot] ?? undefined
  const scopeOf = (request: FastifyRequest) => ((request as Scoped)[scopeSlot] ??= new RequestScope(pool, request, responseOf))
  fastify.decorate(decorator, { getter: () => pool.knex })
  const manager: ForkSafeDbManager = { stats: () => pool.stats(), check: async () => pool.check(), refresh: async () => pool.refresh() }
  fastify.decorate(managerName, manager)
  recordRegistration(manager, pool)
  fastify.decorateRequest(scopeSlot as unknown as string, null)
  fastify.decorateRequest(responseSlot as unknown as string, null)
  fastify.decorateRequest(decorator, { getter () { return scopeOf(this).knex } })
  addRouteTransactions(fastify, decorator, { scopeOf, existingScope: (request) => (request as Scoped)[scopeSlot] })
  // The response is recorded for the scope, which listens for its end only when the request
  // begins a transaction (the leak check, see request/request-scope.ts). A callback hook that
  // stores one field: an onResponse hook would cost every request Fastify's response listeners.
  fastify.addHook('onRequest', (request, reply, done) => {
    const scoped = request as Scoped
    scoped[responseSlot] = reply.raw as ScopeResponse
    scoped[scopeSlot]?.responding()
    done()
  })

  // Saturation, timeouts, an unreachable database, a lost connection, a deadlock: 503s a client
  // may retry; tell well-behaved clients when to come back.
  fastify.addHook('onError', async (_request, reply, error) => {
    if (RETRYABLE.has(error.code)) reply.header('retry-after', RETRY_AFTER_SECONDS)
  })

  fastify.addHook('onReady', async () => {
    // Resolved now: the registration it names may be registered after this one.
    const fallback = options.replicaLagFallback
    if (fallback !== undefined) pool.fallBackTo(registrationNamed(fastify, fallback))
    await pool.warm(fastify.initialConfig.pluginTimeout)
  })
  // preClose runs as close() begins, before Fastify waits for in-flight requests: the only
  // point from which a deadline can bound a request stuck on a silent database.
  fastify.addHook('preClose', async () => pool.beginClose())
  // Fastify runs onClose after in-flight requests have ended; destroy() also waits for used connections.
  fastify.addHook('onClose', async () => pool.close())
}

/** The plugin: `fastify.register(forkSafeDb, { connection })`. */
export const forkSafeDb = fp(forkSafeDbPlugin, { fastify: '5.x', name: PLUGIN_NAME })
export default forkSafeDb

// Named, not `export *`: Node finds the named exports of a CommonJS module by reading its
// source, and a star re-export next to our `module.exports` assignment hides them from
// `import { FST_FORK_SAFE_DB_… } from 'fastify-fork-safe-db'`.
export {
  FST_FORK_SAFE_DB_INVALID_OPTION,
  FST_FORK_SAFE_DB_INVALID_CONNECTION,
  FST_FORK_SAFE_DB_UNSAFE_OPTION,
  FST_FORK_SAFE_DB_ALREADY_REGISTERED,
  FST_FORK_SAFE_DB_WARMUP_FAILED,
  FST_FORK_SAFE_DB_POOL_SATURATED,
  FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT,
  FST_FORK_SAFE_DB_QUERY_TIMEOUT,
  FST_FORK_SAFE_DB_UNAVAILABLE,
  FST_FORK_SAFE_DB_CONNECTION_LOST,
  FST_FORK_SAFE_DB_CONNECT_TIMEOUT,
  FST_FORK_SAFE_DB_CONNECT_REFUSED,
  FST_FORK_SAFE_DB_DEADLOCK,
  FST_FORK_SAFE_DB_LOCK_WAIT_TIMEOUT,
  FST_FORK_SAFE_DB_CLOSE_TIMEOUT,
  FST_FORK_SAFE_DB_CLOSED,
  FST_FORK_SAFE_DB_CLIENT_GONE,
  FST_FORK_SAFE_DB_BUDGET_EXCEEDED,
  FST_FORK_SAFE_DB_UNSUPPORTED_VERSION,
  FST_FORK_SAFE_DB_TRANSACTION_AFTER_RESPONSE,
  FST_FORK_SAFE_DB_TRANSACTION_ROLLED_BACK,
  FST_FORK_SAFE_DB_ROUTE_TRANSACTION_PAYLOAD,
  FST_FORK_SAFE_DB_ROUTE_OPTION_UNCLAIMED,
  FST_FORK_SAFE_DB_CLUSTER_NOT_PRIMARY,
  FST_FORK_SAFE_DB_READ_ONLY,
  FST_FORK_SAFE_DB_NODE_NOT_READY,
  FST_FORK_SAFE_DB_TRANSACTION_ABORTED,
  FST_FORK_SAFE_DB_COMMIT_UNKNOWN,
  FST_FORK_SAFE_DB_REPLICA_LAG
} from './errors'
/** The budget arithmetic, for printing a deployment's budget (the example's startup table). */
export { computeBudget }
/** The names of the plugin's diagnostics_channel channels (docs/architecture.md lists their fields). */
export { channels }
/** The names of the plugin's TracingChannels, for `diagnostics_channel.tracingChannel(…)` (docs/architecture.md lists their contexts). */
export { tracingChannels }
export type {
  AcquireTraceContext, CancelTraceContext, ConnectTraceContext, QueryTraceContext, TraceContext, TransactionTraceContext
} from './events/tracing'
export type {
  BreakerCloseEvent, BreakerOpenEvent, DestroyReason, PoolAcquireEvent, PoolConnectEvent, PoolDestroyEvent, PoolIdentity,
  PoolReleaseEvent, QueryCancelEvent, QueryEndEvent, QueryStartEvent, QueryTimeoutEvent, TransactionBeginEvent, TransactionEndEvent
} from './events/channels'
export type { ConnectionBudget, ConnectionBudgetOptions } from './pool/budget'
export type { AcquireWaitStats, ColdAcquireStats, ConnectionHolder, ConnectionStats, ForkSafeDbStats, HostStats, PoolState } from './pool/stats'
export type { HostPolicy, HostRole, HostState } from './hosts/host'
export type { AfterCreate, ForkSafeDbOptions, ForkSafeDbPoolOptions, MeterProviderLike, MetricsOptions } from './options/resolve-options'
export type { ConnectionProvider, ProvidedConnection, UnsafeOptIns } from './options/connection'
export type { RouteDbOptions } from './request/route-transaction'
export type { RefreshResult } from './lifecycle/fork-safe-pool'

// `require('fastify-fork-safe-db')` returns the plugin itself, like every Fastify plugin, with the
// named exports hanging off it so destructuring `require` keeps working.
module.exports = Object.assign(forkSafeDb, { default: forkSafeDb, forkSafeDb, computeBudget, channels, tracingChannels }, errors)
