// The IPC protocol between the cluster primary and its workers.

/** One worker's answer to a stats collection: its pool's stats and its response count. */
export interface WorkerStats {
  pid: number
  responses: number
  pool: unknown
}

/**
 * Worker -> primary:
 * - `recycle`: this worker has served MAX_REQUESTS responses and wants a replacement;
 * - `stats-all`: a client asked this worker for `GET /stats?all=1`: collect every worker's stats;
 * - `stats`: this worker's answer to a `collect-stats`;
 * - `drained`: this worker has drained; its pool's cold-acquire count, for the primary's log.
 */
export type WorkerMessage =
  | { type: 'recycle' }
  | { type: 'drained', coldAcquires: number, coldWaitMillis: number }
  | { type: 'stats-all', id: number }
  | { type: 'stats', id: number, stats: WorkerStats }

/**
 * Primary -> worker:
 * - `retire`: stop accepting, finish in-flight requests, close the pool and exit;
 * - `collect-stats`: answer with a `stats` message;
 * - `all-stats`: the answer to a `stats-all`.
 */
export type PrimaryMessage =
  | { type: 'retire' }
  | { type: 'collect-stats', id: number }
  | { type: 'all-stats', id: number, workers: WorkerStats[] }
