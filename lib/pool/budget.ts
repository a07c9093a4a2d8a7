// N processes x pool.max is what the server sees, and "Too many connections" is what a cluster
// gets when nobody did that multiplication. A budget does it: given the number of processes and
// a total (a number, or the server's own limit), each process's pool.max is capped at its share:
//
//   share = floor((total - reserve) / workers)
//
// `reserve` keeps connections free for everything that is not this app: admin sessions,
// migrations, monitoring, the short-lived connection each KILL QUERY opens, and the overlap of
// a rolling restart (or count that one in `workers`).
//
// A numeric total is applied as soon as the pool is built; `'server'` as soon as the server's
// limits are read on the pool's first connection (warm-up's first, or the first query's when the
// pool is lazy: that query waits for it, so no connection opens before the cap is known). A pool
// rebuilt after a pid change gets the same cap at once.

import type { FastifyBaseLogger } from 'fastify'
import cluster from 'node:cluster'
import { FST_FORK_SAFE_DB_BUDGET_EXCEEDED } from '../errors'
import type { ConnectionBudgetOptions, ResolvedBudget, WorkersSource } from '../options/budget'
import type { ServerLimits } from './server-limits'

// The option's shape lives with the other options; re-exported for the package entry.
export type { ConnectionBudgetOptions }

export type TotalSource = 'option' | 'max_connections' | 'max_user_connections'

/** The arithmetic, as applied: what `stats().budget` reports and the example prints. */
export interface ConnectionBudget {
  workers: number
  workersFrom: WorkersSource
  total: number
  totalFrom: TotalSource
  reserve: number
  /** floor((total - reserve) / workers) */
  perProcess: number
  /** This process's pool.max and pool.min after the cap. */
  poolMax: number
  poolMin: number
  fits: boolean
  /** Why it does not fit, when it does not. */
  problem?: string
}

export interface BudgetInput {
  workers: number
  total: number
  reserve: number
  poolMax: number
  poolMin: number
  /** Whether the user set pool.max / pool.min themselves (a default may simply be capped). */
  explicitMax: boolean
  explicitMin: boolean
}

/** Caps pool.max (and pool.min) at the share; `fits` is false when the configuration cannot. */
export function computeBudget (input: BudgetInput): Pick<ConnectionBudget, 'perProcess' | 'poolMax' | 'poolMin' | 'fits' | 'problem'> {
  const perProcess = Math.floor(Math.max(0, input.total - input.reserve) / input.workers)
  const poolMax = Math.max(1, Math.min(input.poolMax, perProcess))
  const poolMin = Math.min(input.poolMin, poolMax)
  const demand = `${input.workers} processes x pool.max ${input.poolMax} = ${input.workers * input.poolMax}`
  const room = `${input.total} - reserve ${input.reserve} = ${input.total - input.reserve}`
  let problem: string | undefined
  if (perProcess < 1) problem = `not even one connection per process: ${room} connections for ${input.workers} processes`
  else if (input.explicitMax && input.poolMax > perProcess) problem = `${demand} exceeds ${room}; pool.max capped at ${perProcess}`
  else if (input.explicitMin && input.poolMin > perProcess) problem = `pool.min ${input.poolMin} exceeds the share of ${perProcess} per process; capped`
  return problem === undefined ? { perProcess, poolMax, poolMin, fits: true } : { perProcess, poolMax, poolMin, fits: false, problem }
}

/** The server's limit for our account: the smaller of the global and the per-user one (0 = none). */
export function serverTotal (maxConnections: number, maxUserConnections: number): { total: number, from: TotalSource } {
  if (maxUserConnections > 0 && maxUserConnections < maxConnections) return { total: maxUserConnections, from: 'max_user_connections' }
  return { total: maxConnections, from: 'max_connections' }
}

/**
 * The budget as it applies to this process, or undefined while it waits for the server's
 * limits. `configured` is the pool size the user asked for.
 */
export function budgetFor (budget: ResolvedBudget, configured: { min: number, max: number }, limits: ServerLimits | undefined): ConnectionBudget | undefined {
  if (budget.total === 'server' && limits === undefined) return undefined
  const { total, from } = budget.total === 'server' && limits !== undefined
    ? serverTotal(limits.maxConnections, limits.maxUserConnections)
    : { total: budget.total as number, from: 'option' as const }
  const shares = computeBudget({ ...budget, total, poolMax: configured.max, poolMin: configured.min })
  return { workers: budget.workers, workersFrom: budget.workersFrom, total, totalFrom: from, reserve: budget.reserve, ...shares }
}

/** Logs the budget as applied; throws FST_FORK_SAFE_DB_BUDGET_EXCEEDED when it cannot fit and `onExceed` is 'fail'. */
export function reportBudget (applied: ConnectionBudget, options: ResolvedBudget, decorator: string, log: FastifyBaseLogger): void {
  const report = { budget: applied }
  if (!applied.fits) {
    if (options.onExceed === 'fail') throw new FST_FORK_SAFE_DB_BUDGET_EXCEEDED(decorator, applied.problem)
    log.warn(report, `the connection budget does not fit: ${applied.problem ?? ''}`)
  } else if (options.workersFrom === 'assumed' && !cluster.isPrimary) {
    log.warn(report, 'connection budget: the number of workers is unknown, assuming 1; set budget.workers or WEB_CONCURRENCY')
  } else {
    log.info(report, 'connection budget applied')
  }
}
