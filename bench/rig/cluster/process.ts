import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { freePort } from '../../../support/private-server'
import type { StartCommand } from '../harness-priority'
import type { AppEvent } from './messages'

// The harness's side of the respawn benchmark's cluster app: starts it (through `command`, say
// nice(1), when the harness runs at another priority), keeps every event it reports, and stops it.

export const APP_ENTRY = join(__dirname, 'app.js')
const START_TIMEOUT_MILLIS = 60_000

export class ClusterApp {
  readonly events: AppEvent[] = []
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  readonly #waiters = new Set<() => void>()

  private constructor (readonly child: ChildProcess, readonly port: number) {
    child.on('message', (event: AppEvent) => {
      this.events.push(event)
      for (const wake of this.#waiters) wake()
    })
    // Every event sent before the primary left arrives before its channel's end.
    const disconnected = new Promise<void>((resolve) => {
      if (!child.connected) resolve()
      child.once('disconnect', () => resolve())
    })
    const exit = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }))
    })
    this.exited = Promise.all([exit, disconnected]).then(([status]) => status)
  }

  /** Starts the app with `env` on top of this process's, on a free port; resolves once every worker listens. */
  static async start (env: Record<string, string>, command?: StartCommand): Promise<ClusterApp> {
    const port = await freePort()
    const { file, args } = command ?? { file: process.execPath, args: [APP_ENTRY] }
    const child = spawn(file, args, {
      env: { ...process.env, ...env, PORT: String(port) },
      stdio: ['ignore', 'ignore', 'inherit', 'ipc']
    })
    const app = new ClusterApp(child, port)
    try {
      await app.waitFor((event) => event.type === 'ready', 1, START_TIMEOUT_MILLIS)
    } catch (error) {
      await app.kill()
      throw error
    }
    return app
  }

  /** Resolves once `count` events match, or rejects after `timeoutMillis` or if the app exits. */
  waitFor (match: (event: AppEvent) => boolean, count = 1, timeoutMillis = START_TIMEOUT_MILLIS): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => { if (this.events.filter(match).length >= count) finish(resolve) }
      const onExit = () => finish(() => reject(new Error('the cluster app exited while waiting for an event')))
      const timedOut = () => finish(() => reject(new Error('timed out waiting for the cluster app')))
      const timer = setTimeout(timedOut, timeoutMillis)
      const finish = (settle: () => void) => {
        clearTimeout(timer)
        this.#waiters.delete(check)
        this.child.off('exit', onExit)
        settle()
      }
      this.#waiters.add(check)
      this.child.once('exit', onExit)
      check()
    })
  }

  /** SIGTERM: every worker retires, then the primary exits. */
  async stop (): Promise<{ code: number | null, signal: NodeJS.Signals | null }> {
    this.child.kill('SIGTERM')
    return await this.exited
  }

  async kill (): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    this.child.kill('SIGKILL')
    await this.exited
  }
}
