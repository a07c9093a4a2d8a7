import { execFileSync } from 'node:child_process'
import { getPriority, setPriority } from 'node:os'

// A benchmark's clients and its simulated network (the delaying proxy) run in this process, on
// the same cores as the app they measure. In production neither sits on the app's cores, and
// when a starting worker takes both cores here, this process falls behind too: its lateness is
// then counted as the app's (a request measured 64.7 ms while the proxy's writes were 32.7 ms
// late). So the harness takes a higher priority than the app where it may:
// - 'fifo' (the default): its main thread runs under SCHED_FIFO, ahead of every normal thread,
//   with reset-on-fork, so that the app it spawns (and threads it makes) run normally. At nice -5
//   the harness still waited for a CPU for up to 42 ms while a replacement started.
// - 'nice': its main thread at nice -5, the app started through nice(1) at the normal priority.
// - 'none' (BENCH_HARNESS_PRIORITY=none): everything at one priority, as before.
// The harness is mostly idle (it waits on sockets and timers), so it takes little from the app.

const MODES = ['fifo', 'nice', 'none'] as const
type Mode = typeof MODES[number]
const NICE = -5

/** A program and its arguments that start the app's entry point. */
export interface StartCommand { file: string, args: string[] }

export interface HarnessPriority {
  /** How to start the app so that it runs at the priority this process had before. */
  command: (entry: string) => StartCommand | undefined
  /** For the report's header. */
  describe: string
}

const asBefore = (describe: string): HarnessPriority => ({ command: () => undefined, describe })

function fifo (): HarnessPriority | undefined {
  if (process.platform !== 'linux') return undefined
  try {
    // This pid is the main thread's id: only that thread, where the clients and the proxy run.
    const pid = String(process.pid)
    execFileSync('chrt', ['--fifo', '--reset-on-fork', '--pid', '1', pid], { stdio: 'ignore' })
    return asBefore('harness (clients, proxy) under SCHED_FIFO, app at the normal priority')
  } catch {
    return undefined // No chrt, or no permission (CAP_SYS_NICE, RLIMIT_RTPRIO).
  }
}

function nice (): HarnessPriority | undefined {
  const before = getPriority()
  try {
    // Linux keeps a nice value per thread: this sets the main thread's, and the threads it
    // creates from now on.
    setPriority(NICE)
  } catch {
    return undefined
  }
  const back = String(before - NICE)
  return {
    command: (entry) => ({ file: 'nice', args: ['-n', back, process.execPath, entry] }),
    describe: `harness (clients, proxy) at nice ${NICE}, app at nice ${before}`
  }
}

export function raiseHarnessPriority (mode = process.env.BENCH_HARNESS_PRIORITY ?? 'fifo'): HarnessPriority {
  if (!MODES.includes(mode as Mode)) {
    throw new Error(`BENCH_HARNESS_PRIORITY must be one of ${MODES.join(', ')}, got "${mode}"`)
  }
  if (mode === 'none') return asBefore('harness and app at one priority')
  const raised = (mode === 'fifo' ? fifo() : undefined) ?? nice()
  return raised ?? asBefore('harness and app at one priority (no permission to raise the harness)')
}
