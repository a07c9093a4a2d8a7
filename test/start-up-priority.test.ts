import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { getPriority } from 'node:os'
import { IdleShare } from '../example-app/idle-share'
import { canRestorePriority, StartUpPriority, threadsOf } from '../example-app/start-up-priority'

// The example's start-up priority on a real process: lowered only where it can be given back
// and where the machine has idle CPU for the start-up to run on.

const own = getPriority()
const restorable = canRestorePriority()
let child: ChildProcess | undefined
let priority: StartUpPriority | undefined

beforeEach(async () => {
  // A process with a few threads, as a worker has, that lives until it is killed.
  child = spawn(process.execPath, ['-e', 'process.stdout.write("up"); setInterval(() => {}, 1000)'], { stdio: ['ignore', 'pipe', 'ignore'] })
  await once(child.stdout!, 'data')
})

afterEach(async () => {
  priority?.stop()
  priority = undefined
  if (child !== undefined && child.exitCode === null && child.signalCode === null) {
    const exited = once(child, 'exit')
    child.kill()
    await exited
  }
  child = undefined
})

const nicesOf = (pid: number) => threadsOf(pid).map((thread) => getPriority(thread))

test('leaves a start-up alone when less than a quarter of the machine was idle', () => {
  priority = new StartUpPriority(19, { restorable, idleShare: () => 0.1 })
  // Where nothing could be given back, nothing is even looked at.
  expect(priority.lower(child!.pid)).toEqual({ nice: undefined, idleShare: restorable ? 0.1 : undefined })
  expect(nicesOf(child!.pid!).every((nice) => nice === own)).toBe(true)
})

test('lowers every thread of a start-up when the machine has idle CPU, and gives the priority back', () => {
  priority = new StartUpPriority(19, { restorable, idleShare: () => 0.9 })
  const lowered = priority.lower(child!.pid)
  // Where the primary could not give it back (no CAP_SYS_NICE, RLIMIT_NICE), nothing is lowered.
  const expected = restorable ? 19 : own
  expect(lowered).toEqual({ nice: restorable ? 19 : undefined, idleShare: restorable ? 0.9 : undefined })
  const threads = nicesOf(child!.pid!)
  expect(threads.length).toBeGreaterThan(1)
  expect(threads).toEqual(threads.map(() => expected))
  priority.restore(child!.pid)
  expect(nicesOf(child!.pid!).every((nice) => nice === own)).toBe(true)
})

test('lowers a start-up when the idle share is unknown (the deadline bounds it), and stop() gives it back', () => {
  priority = new StartUpPriority(19, { restorable, idleShare: () => undefined })
  expect(priority.lower(child!.pid).nice).toBe(restorable ? 19 : undefined)
  priority.stop()
  expect(nicesOf(child!.pid!).every((nice) => nice === own)).toBe(true)
})

test('reads the machine\'s idle share from /proc/stat', () => {
  const idle = new IdleShare()
  try {
    // Spin past a few of the kernel's 10 ms ticks, so that the counters move.
    const until = performance.now() + 60
    while (performance.now() < until) Math.sqrt(Math.random())
    const share = idle.recent()
    if (process.platform !== 'linux') {
      expect(share).toBeUndefined()
      return
    }
    expect(share).toBeGreaterThanOrEqual(0)
    // This process spun on one of the cores the whole time.
    expect(share).toBeLessThan(1)
  } finally {
    idle.stop()
  }
})
