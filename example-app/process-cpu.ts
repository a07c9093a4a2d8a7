import { readFileSync } from 'node:fs'

// The CPU a process has used so far, every thread of it (user + system), read from Linux's
// /proc/<pid>/stat by its parent. At 'listening' it is a replacement's start-up cost: the CPU it
// took from the workers that served meanwhile. Undefined where /proc cannot say.

// USER_HZ is 100 on every Linux Node supports (the kernel's ABI for /proc, not CONFIG_HZ).
const MILLIS_PER_TICK = 10

export function cpuMillisOf (pid: number | undefined): number | undefined {
  if (pid === undefined || process.platform !== 'linux') return undefined
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
    // The name in parentheses may hold spaces: count the fields after its closing one.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // Fields 14 and 15 of the line (utime, stime) are the 12th and 13th after the name.
    return (Number(fields[11]) + Number(fields[12])) * MILLIS_PER_TICK
  } catch {
    return undefined
  }
}
