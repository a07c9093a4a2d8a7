import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { freePort } from './private-server'

// Spawns the compiled example app (`npm run build:example`) as a real process tree and follows
// its JSON log lines, so tests can wait for events ("all workers listening") instead of sleeping.

// This file runs from source under Jest and compiled under build/ in benchmarks: find the root.
function projectRoot (): string {
  let directory = __dirname
  while (!existsSync(join(directory, 'package.json'))) {
    const parent = dirname(directory)
    if (parent === directory) throw new Error(`no package.json above ${__dirname}`)
    directory = parent
  }
  return directory
}

export const EXAMPLE_ENTRY = join(projectRoot(), 'build', 'example-app', 'main.js')
const EVENT_TIMEOUT_MILLIS = 20_000

export interface LogLine { msg: string, [key: string]: unknown }

/** Another way to start the example than `node <entry>`, such as `npm run example`. */
export interface StartCommand {
  file: string
  args: string[]
  cwd?: string
  /** Variables of this process's environment the command must not inherit. */
  unset?: string[]
}

export class ExampleProcess {
  readonly child: ChildProcess
  readonly port: number
  readonly lines: LogLine[] = []
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  readonly #waiters = new Set<() => void>()

  private constructor (child: ChildProcess, port: number) {
    this.child = child
    this.port = port
    // 'close', not 'exit': the workers share the primary's stdout, and every line they wrote
    // must have been read before a test counts them.
    this.exited = new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal })))
    for (const stream of [child.stdout, child.stderr]) {
      if (stream === null) continue
      createInterface({ input: stream }).on('line', (text) => {
        try {
          this.lines.push(JSON.parse(text) as LogLine)
        } catch {
          this.lines.push({ msg: text })
        }
        for (const waiter of this.#waiters) waiter()
      })
    }
  }

  /**
   * Starts the example (or another cluster entry, for benchmarks); resolves once the log line
   * `until` appears (by default, once every worker listens).
   */
  static async start (
    env: Record<string, string>,
    { detached = false, entry = EXAMPLE_ENTRY, until = 'all workers listening', command = undefined as StartCommand | undefined, timeoutMillis = EVENT_TIMEOUT_MILLIS } = {}
  ): Promise<ExampleProcess> {
    const port = await freePort()
    const { file, args, cwd, unset = [] } = command ?? { file: process.execPath, args: [entry] }
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([key]) => !unset.includes(key)))
    const child = spawn(file, args, {
      // METRICS_PORT 0 (no metrics endpoint) unless a test asks: examples started in parallel
      // would otherwise all want 9464.
      env: { ...inherited, HOST: '127.0.0.1', PORT: String(port), LOG_LEVEL: 'info', METRICS_PORT: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached,
      cwd
    })
    const example = new ExampleProcess(child, port)
    try {
      await example.waitFor((line) => line.msg === until, 1, timeoutMillis)
    } catch (error) {
      // Never leave a tree behind that the caller has no handle on.
      await example.kill()
      throw error
    }
    return example
  }

  /** Lines whose message is `msg`. */
  logged (msg: string): LogLine[] {
    return this.lines.filter((line) => line.msg === msg)
  }

  /** Resolves with the `count`th log line (past or future) that matches; rejects on timeout or exit. */
  waitFor (match: (line: LogLine) => boolean, count = 1, timeoutMillis = EVENT_TIMEOUT_MILLIS): Promise<LogLine> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.lines.filter(match)
        if (found.length >= count) finish(() => resolve(found[count - 1]))
      }
      const timer = setTimeout(() => finish(() => reject(new Error(`timed out waiting for a log line; last lines:\n${this.tail()}`))), timeoutMillis)
      const onExit = () => finish(() => reject(new Error(`example exited while waiting; last lines:\n${this.tail()}`)))
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

  tail (): string {
    return this.lines.slice(-15).map((line) => JSON.stringify(line)).join('\n')
  }

  /** Kills the primary if a test left it running; its workers exit when their IPC channel closes. */
  async kill (): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    this.child.kill('SIGKILL')
    await this.exited
  }
}

/** What the workers logged against what the clients saw (Fastify's `incoming request` and `request completed` lines). */
export interface RequestAccounting {
  /** Requests a worker received. */
  received: number
  /** Requests a worker answered with 200. */
  completed: number
  /** Requests a client got a 200 for. */
  answered: number
  /** Errors below HTTP the clients saw, by code (ECONNREFUSED, ECONNRESET, TIMEOUT …). */
  errors: Record<string, number>
}

export function requestAccounting (example: ExampleProcess, outcomes: ReadonlyArray<{ status: number, error?: string }>): RequestAccounting {
  const errors: Record<string, number> = {}
  for (const outcome of outcomes) if (outcome.error !== undefined) errors[outcome.error] = (errors[outcome.error] ?? 0) + 1
  return {
    received: example.logged('incoming request').length,
    completed: example.logged('request completed').filter((line) => (line.res as { statusCode?: number } | undefined)?.statusCode === 200).length,
    answered: outcomes.filter((outcome) => outcome.status === 200).length,
    errors
  }
}
