import { getPriority, setPriority } from 'node:os'
import type { StartCommand } from '../support/example-process'

// A benchmark's clients and its simulated network (the delaying proxy) run in this process, on
// the same cores as the app they measure. In production neither sits on the app's cores, and
// when a starting worker takes both cores here, this process falls behind too: its lateness is
// then counted as the app's (a request measured 64.7 ms while the proxy's writes were 32.7 ms
// late). So the harness raises its own priority a little, where it may, and starts the app at
// the normal priority through nice(1). BENCH_HARNESS_NICE=0 keeps everything at one priority.

const WANTED = Number(process.env.BENCH_HARNESS_NICE ?? -5)

export interface HarnessPriority {
  /** The nice value this process's main thread runs at. */
  nice: number
  /** How to start the app so that it runs at the priority this process had before. */
  command: (entry: string) => StartCommand | undefined
  /** For the report's header. */
  describe: string
}

export function raiseHarnessPriority (): HarnessPriority {
  const before = getPriority()
  if (WANTED >= before) return { nice: before, command: () => undefined, describe: `harness and app at nice ${before}` }
  try {
    // Linux keeps a nice value per thread: this sets the main thread's, where the clients and
    // the proxy run, and the threads it creates from now on.
    setPriority(WANTED)
  } catch {
    return { nice: before, command: () => undefined, describe: `harness and app at nice ${before} (no permission to raise the harness to ${WANTED})` }
  }
  const back = String(before - WANTED)
  return {
    nice: WANTED,
    command: (entry) => ({ file: 'nice', args: ['-n', back, process.execPath, entry] }),
    describe: `harness (clients, proxy) at nice ${WANTED}, app at nice ${before}`
  }
}
