import cluster, { type Worker } from 'node:cluster'
import { readConfig } from './config'
import { epochNow, type AppEvent, type RetireCommand, type WorkerReport } from './messages'

// The respawn benchmark's cluster primary: a trimmed copy of the example's supervisor. It holds
// no pool. A replacement (a recycle, or a rolling restart on SIGHUP) must listen, hence be warm,
// before the worker it replaces is told to retire; a worker that dies unasked is respawned at
// once (the harness sees it in the events); SIGTERM / SIGINT retire every worker, then exit.
// Workers accept from the shared socket themselves (SCHED_NONE, as the example does on Linux)
// unless NODE_CLUSTER_SCHED_POLICY says otherwise. Everything that happens goes to the harness.

function tell (event: AppEvent): void {
  if (process.connected) process.send?.(event)
}

export async function runPrimary (): Promise<void> {
  const config = readConfig()
  if (process.env.NODE_CLUSTER_SCHED_POLICY === undefined) cluster.schedulingPolicy = cluster.SCHED_NONE
  const serving = new Set<Worker>()
  const retiring = new Set<Worker>()
  const exited = new Map<Worker, Promise<void>>()
  /** old worker -> its replacement has been forked. */
  const replacing = new Set<Worker>()
  let stopping = false
  let firstStarts = 0

  const retire = (worker: Worker) => {
    if (retiring.has(worker) || worker.isDead()) return
    retiring.add(worker)
    serving.delete(worker)
    if (worker.isConnected()) worker.send({ type: 'retire' } satisfies RetireCommand, () => {})
  }

  /** Forks a worker; once it listens, `replaces` retires. */
  const fork = (replaces?: Worker): void => {
    const worker = cluster.fork()
    const pid = worker.process.pid ?? 0
    exited.set(worker, new Promise((resolve) => worker.once('exit', () => resolve())))
    tell({ type: 'forked', pid, replaces: replaces?.process.pid ?? null, at: epochNow() })
    worker.on('message', (report: WorkerReport) => {
      tell({ ...report, pid })
      if (report.type === 'recycle') replace(worker).catch(() => {})
    })
    worker.once('listening', () => {
      serving.add(worker)
      // Only now, with the replacement accepting, may its predecessor stop accepting.
      if (replaces !== undefined) retire(replaces)
      if (stopping) retire(worker)
      if (replaces === undefined && ++firstStarts === config.workers) tell({ type: 'ready' })
    })
    worker.once('exit', (code, signal) => {
      const asked = retiring.has(worker)
      serving.delete(worker)
      retiring.delete(worker)
      replacing.delete(worker)
      exited.delete(worker)
      tell({ type: 'exited', pid, code, signal, asked })
      if (!asked && !stopping) fork(replaces)
    })
  }

  /** Forks `old`'s replacement (once); resolves when `old` has exited. */
  const replace = (old: Worker): Promise<void> => {
    const gone = exited.get(old) ?? Promise.resolve()
    if (stopping || !serving.has(old) || replacing.has(old)) return gone
    replacing.add(old)
    fork(old)
    return gone
  }

  const stop = () => {
    stopping = true
    for (const worker of exited.keys()) retire(worker)
    // Then nothing holds the process: it exits once the channel has sent what it reported.
    Promise.all(exited.values()).then(() => process.disconnect?.(), () => process.exit(1))
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
  process.on('SIGHUP', () => {
    const roll = async () => {
      for (const worker of [...serving]) await replace(worker)
      tell({ type: 'rolled' })
    }
    roll().catch(() => {})
  })
  // The first worker starts alone and the others once it listens, as the example's primary does.
  cluster.once('listening', () => { for (let i = 1; i < config.workers; i++) fork() })
  fork()
}
