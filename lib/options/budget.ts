// The `budget` option as the user writes it, and where its worker count comes from when the
// option leaves it out. The arithmetic that applies it to the pool (pool/budget.ts) sits above
// this: options are read before any pool exists, so this file imports nothing from pool/.

export interface ConnectionBudgetOptions {
  /** Processes sharing the total. Default: WEB_CONCURRENCY, then pm2's `instances`, else 1. */
  workers?: number
  /** Connections all processes may hold: a number, or `'server'` (its max_connections / max_user_connections, read at warm-up). Default 'server'. */
  total?: number | 'server'
  /** Connections left for everyone else. Default 10. */
  reserve?: number
  /** What a configuration that cannot fit does at warm-up: log a warning, or reject ready(). Default 'warn'. */
  onExceed?: 'warn' | 'fail'
}

export const BUDGET_DEFAULTS = { total: 'server', reserve: 10, onExceed: 'warn' } as const

export type WorkersSource = 'option' | 'WEB_CONCURRENCY' | 'pm2' | 'assumed'

/** The budget options with their defaults, and what the user set on the pool themselves. */
export interface ResolvedBudget {
  workers: number
  workersFrom: WorkersSource
  total: number | 'server'
  reserve: number
  onExceed: 'warn' | 'fail'
  explicitMax: boolean
  explicitMin: boolean
}

/** The number of processes, as the environment tells it (Heroku-style WEB_CONCURRENCY, pm2). */
export function workersFromEnvironment (env: NodeJS.ProcessEnv = process.env): { workers: number, from: WorkersSource } {
  const concurrency = positiveInteger(env.WEB_CONCURRENCY)
  if (concurrency !== undefined) return { workers: concurrency, from: 'WEB_CONCURRENCY' }
  // pm2 copies the app's settings into its processes' environment, `instances` among them.
  const instances = env.pm_id === undefined ? undefined : positiveInteger(env.instances)
  if (instances !== undefined) return { workers: instances, from: 'pm2' }
  return { workers: 1, from: 'assumed' }
}

function positiveInteger (text: string | undefined): number | undefined {
  if (text === undefined || !/^\d+$/.test(text)) return undefined
  const value = Number(text)
  return value > 0 ? value : undefined
}
