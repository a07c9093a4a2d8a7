import type { FastifyInstance } from 'fastify'
import { FST_FORK_SAFE_DB_INVALID_OPTION } from '../errors'
import type { ForkSafePool } from './fork-safe-pool'

// Which of a Fastify instance's decorators are this plugin's registrations: `replicaLagFallback`
// names one by its decorator, and only a registration of ours can lend its connections. Keyed
// by the `<decorator>Pool` manager object each registration decorates the instance with.

const pools = new WeakMap<object, ForkSafePool>()

export function recordRegistration (manager: object, pool: ForkSafePool): void {
  pools.set(manager, pool)
}

/** The pool of the registration `name` visible from `fastify`; a coded error when there is none. */
export function registrationNamed (fastify: FastifyInstance, name: string): ForkSafePool {
  const manager = fastify.hasDecorator(`${name}Pool`) ? (fastify as unknown as Record<string, unknown>)[`${name}Pool`] : undefined
  const pool = typeof manager === 'object' && manager !== null ? pools.get(manager) : undefined
  if (pool !== undefined) return pool
  const why = fastify.hasDecorator(name) ? 'that decorator is not a fastify-fork-safe-db registration' : 'no decorator of that name is registered here'
  throw new FST_FORK_SAFE_DB_INVALID_OPTION(`replicaLagFallback must be the decorator of another fastify-fork-safe-db registration on this Fastify instance (or a parent of it), got \`${name}\`: ${why}`)
}
