import { createConnection } from 'mysql2/promise'
import { computeBudget } from 'fastify-fork-safe-db'
import type { ExampleConfig } from './config'

// The primary prints, before forking, what its workers will hold: the same arithmetic the
// plugin applies in each worker at warm-up (budget.workers = WORKERS + 1 for the overlap of a
// recycle), against the server's own limit, read on a connection closed before the first fork.

const RESERVE = 10

export async function budgetTable (url: string, config: ExampleConfig): Promise<string> {
  const connection = await createConnection({ uri: url })
  let limit: number
  try {
    const [rows] = await connection.query('SELECT @@GLOBAL.max_connections AS global, @@SESSION.max_user_connections AS account')
    const { global, account } = (rows as Array<{ global: number, account: number }>)[0]
    limit = account > 0 && account < global ? Number(account) : Number(global)
  } finally {
    await connection.end()
  }
  const processes = config.workers + 1
  const budget = computeBudget({ workers: processes, total: limit, reserve: RESERVE, poolMax: config.poolMax, poolMin: config.poolMin, explicitMax: false, explicitMin: false })
  const rows = [
    ['server max_connections', String(limit)],
    ['reserve (admin, KILL QUERY, migrations)', String(RESERVE)],
    [`processes (${config.workers} workers + 1 overlap)`, String(processes)],
    ['share per process', String(budget.perProcess)],
    ['pool.max per worker', String(budget.poolMax)],
    ['pool.min per worker (held when idle)', String(budget.poolMin)],
    ['connections at most', `${processes * budget.poolMax} of ${limit - RESERVE}`]
  ]
  const width = Math.max(...rows.map(([label]) => label.length))
  return ['connection budget', ...rows.map(([label, value]) => `  ${label.padEnd(width)}  ${value}`)].join('\n')
}
