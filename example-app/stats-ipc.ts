import type { Worker } from 'node:cluster'
import type { PrimaryMessage, WorkerMessage, WorkerStats } from './messages'

// `GET /stats?all=1` lands on one worker; only the primary knows every worker. The worker asks
// the primary, which asks every live worker and answers with what came back within a second
// (a worker that is retiring or stuck is left out rather than holding the response).

const COLLECT_TIMEOUT_MILLIS = 1000
/** A primary that never answers (pm2's daemon, which is not ours): this worker's own stats after this long. */
const ANSWER_TIMEOUT_MILLIS = 2 * COLLECT_TIMEOUT_MILLIS

/** Worker side: answers the primary's collections, and asks it for everyone's stats. */
export function workerStatsChannel (ownStats: () => WorkerStats): { allStats: () => Promise<WorkerStats[]> } {
  let nextId = 0
  const waiting = new Map<number, (workers: WorkerStats[]) => void>()
  process.on('message', (message: PrimaryMessage) => {
    if (message?.type === 'collect-stats') send({ type: 'stats', id: message.id, stats: ownStats() })
    if (message?.type === 'all-stats') {
      waiting.get(message.id)?.(message.workers)
      waiting.delete(message.id)
    }
  })
  return {
    allStats: async () => {
      if (!process.connected) return [ownStats()]
      const id = nextId++
      const answer = new Promise<WorkerStats[]>((resolve) => {
        const timer = setTimeout(() => {
          waiting.delete(id)
          resolve([ownStats()])
        }, ANSWER_TIMEOUT_MILLIS)
        waiting.set(id, (workers) => {
          clearTimeout(timer)
          resolve(workers)
        })
      })
      send({ type: 'stats-all', id })
      return answer
    }
  }
}

function send (message: WorkerMessage): void {
  if (process.connected) process.send?.(message)
}

/** Primary side: collects `stats` from `workers` and answers the worker that asked. */
export function answerStatsRequest (asking: Worker, id: number, workers: Worker[]): void {
  const live = workers.filter((worker) => worker.isConnected())
  const collected: WorkerStats[] = []
  let finished = false
  const finish = () => {
    if (finished) return
    finished = true
    clearTimeout(timer)
    for (const worker of live) worker.off('message', onMessage)
    if (asking.isConnected()) asking.send({ type: 'all-stats', id, workers: collected.sort((a, b) => a.pid - b.pid) } satisfies PrimaryMessage)
  }
  const onMessage = (message: WorkerMessage) => {
    if (message?.type !== 'stats' || message.id !== id) return
    collected.push(message.stats)
    if (collected.length === live.length) finish()
  }
  const timer = setTimeout(finish, COLLECT_TIMEOUT_MILLIS)
  for (const worker of live) {
    worker.on('message', onMessage)
    worker.send({ type: 'collect-stats', id } satisfies PrimaryMessage, () => {})
  }
  if (live.length === 0) finish()
}
