// What the respawn benchmark's cluster app reports: its workers tell their primary over the
// cluster's IPC channel, and the primary passes it on, with the worker's pid, to the harness
// that started it (over its own IPC channel). Data, not log lines. Times are epoch
// milliseconds (performance.timeOrigin + performance.now()), comparable across processes to a
// millisecond or so.

/** Worker -> primary. */
export type WorkerReport =
  /** Listening (after its warm-up); the CPU it used from its start, every thread. */
  | { type: 'listening', at: number, cpuMillis: number }
  /** It has served MAX_REQUESTS responses and wants a replacement. */
  | { type: 'recycle' }
  /**
   * It is closing (retired): each response it sent, as [epoch ms when it ended, ms it took in the
   * worker], and the queries that waited for a connection to be opened (the plugin's count; none
   * for the plain-knex baseline).
   */
  | { type: 'closing', served: Array<[endedAt: number, millis: number]>, coldAcquires: number | null }

/** Primary -> worker. */
export interface RetireCommand { type: 'retire' }

/** Primary -> harness. */
export type AppEvent =
  | { type: 'forked', pid: number, replaces: number | null, at: number }
  | ({ pid: number } & WorkerReport)
  | { type: 'exited', pid: number, code: number | null, signal: string | null, asked: boolean }
  /** Every worker of the first start listens. */
  | { type: 'ready' }
  /** A rolling restart (SIGHUP) has replaced every worker. */
  | { type: 'rolled' }

export const epochNow = (): number => performance.timeOrigin + performance.now()
