import { readFileSync } from 'node:fs'

// How much of the machine's CPU sat idle lately, from Linux's /proc/stat: the primary samples it
// every second, and a start-up is lowered only when there is idle CPU for it to run on. A
// start-up at nice 19 on a machine its serving workers saturate gets almost no CPU, and the
// replacement, or the respawn after a crash, comes back late for nothing.

const SAMPLE_EVERY_MILLIS = 1000
// A window shorter than this is mostly the kernel's 10 ms ticks: take the older sample then.
const SHORTEST_WINDOW_MILLIS = 500

interface Sample { at: number, idle: number, total: number }

/**
 * The machine's CPU time from the "cpu" line of /proc/stat, in USER_HZ ticks: user, nice, system,
 * idle, iowait, irq, softirq, steal. Guest time is left out: it is already inside user and nice.
 * Undefined where /proc/stat cannot be read.
 */
export function machineCpuTicks (): number[] | undefined {
  try {
    const stat = readFileSync('/proc/stat', 'latin1')
    return stat.slice(0, stat.indexOf('\n')).trim().split(/\s+/).slice(1, 9).map(Number)
  } catch {
    return undefined
  }
}

function read (): Sample | undefined {
  const ticks = machineCpuTicks()
  if (ticks === undefined) return undefined
  // Idle and iowait are idle time.
  return { at: performance.now(), idle: ticks[3] + ticks[4], total: ticks.reduce((sum, value) => sum + value, 0) }
}

export class IdleShare {
  #older: Sample | undefined
  #previous: Sample | undefined
  readonly #timer: NodeJS.Timeout

  constructor () {
    this.#previous = read()
    this.#timer = setInterval(() => {
      this.#older = this.#previous
      this.#previous = read()
    }, SAMPLE_EVERY_MILLIS)
    this.#timer.unref()
  }

  /** The idle share (0-1) over the last 0.5-1.5 s; undefined where /proc/stat cannot say. */
  recent (): number | undefined {
    const now = read()
    if (now === undefined) return undefined
    const previous = this.#previous
    const before = previous !== undefined && now.at - previous.at >= SHORTEST_WINDOW_MILLIS ? previous : this.#older ?? previous
    if (before === undefined || now.total <= before.total) return undefined
    return (now.idle - before.idle) / (now.total - before.total)
  }

  stop (): void {
    clearInterval(this.#timer)
  }
}
