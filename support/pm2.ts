import { execFile } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

// The real pm2 CLI (the devDependency), with a PM2_HOME of its own in a temp dir: its daemon,
// sockets, logs and dump never touch a user's ~/.pm2, and `kill()` stops that daemon.

const PM2_BIN = require.resolve('pm2/bin/pm2')
const COMMAND_TIMEOUT_MILLIS = 120_000

export interface Pm2Process { pid: number, pmId: number, name: string, status: string }

export class Pm2 {
  readonly home: string
  readonly #env: NodeJS.ProcessEnv

  private constructor (home: string, env: Record<string, string>) {
    this.home = home
    this.#env = { ...process.env, ...env, PM2_HOME: home }
  }

  /** A pm2 with a fresh PM2_HOME; `env` reaches the daemon and, through `start`, the apps. */
  static async create (env: Record<string, string>): Promise<Pm2> {
    return new Pm2(await mkdtemp(join(tmpdir(), 'pm2-home-')), env)
  }

  /** Runs `pm2 ...args`; rejects with its output if it exits non-zero. */
  run (...args: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(process.execPath, [PM2_BIN, ...args], { env: this.#env, timeout: COMMAND_TIMEOUT_MILLIS, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
        if (error !== null) reject(new Error(`pm2 ${args.join(' ')} failed: ${error.message}\n${stdout}\n${stderr}`))
        else resolve(stdout)
      })
    })
  }

  async list (): Promise<Pm2Process[]> {
    const entries = JSON.parse(await this.run('jlist')) as Array<{ pid: number, pm_id: number, name: string, pm2_env: { status: string } }>
    return entries.map((entry) => ({ pid: entry.pid, pmId: entry.pm_id, name: entry.name, status: entry.pm2_env.status }))
  }

  /**
   * The JSON lines the apps named `name` wrote to stdout, from every instance that ran (pm2
   * keeps one file per pm_id, `<name>-out-<pm_id>.log`, under PM2_HOME/logs); other lines are skipped.
   */
  async appLog (name: string): Promise<Array<Record<string, unknown>>> {
    const directory = join(this.home, 'logs')
    const files = (await readdir(directory)).filter((file) => file.startsWith(`${name}-out`) && file.endsWith('.log'))
    const entries: Array<Record<string, unknown>> = []
    for (const file of files) {
      for (const line of (await readFile(join(directory, file), 'utf8')).split('\n')) {
        if (!line.startsWith('{')) continue
        // A line still being written when the file is read is skipped.
        try { entries.push(JSON.parse(line) as Record<string, unknown>) } catch {}
      }
    }
    return entries
  }

  /** Stops the daemon (and any app still running under it) and removes PM2_HOME. */
  async kill (): Promise<void> {
    await this.run('kill')
    await rm(this.home, { recursive: true, force: true })
  }
}
