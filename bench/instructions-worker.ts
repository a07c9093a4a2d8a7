import { createInterface } from 'node:readline'
import { getHeapSpaceStatistics } from 'node:v8'
import { fail } from './rig/report'
import { buildVariant, closeVariant, drive } from './rig/variants'

// Run under valgrind by bench/instructions.ts, with instrumentation off: builds one variant and
// warms it, says "warm" and waits for "go" (the driver has switched counting on), sends the
// requests, says "done" and waits for "exit" (counting is off again). Nothing is timed here.

/** Bytes in the old generation (old space and large objects). */
function oldGeneration (): number {
  return getHeapSpaceStatistics()
    .filter((space) => space.space_name === 'old_space' || space.space_name === 'large_object_space')
    .reduce((sum, space) => sum + space.space_used_size, 0)
}

async function main (): Promise<void> {
  const [key, url, warmup, requests, concurrency] = process.argv.slice(2)
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
  const told = async (word: string) => {
    const line = await lines.next()
    if (line.value !== word) throw new Error(`expected "${word}" from the driver, got ${String(line.value)}`)
  }
  const variant = await buildVariant(key, url)
  try {
    await drive(variant, Number(warmup), Number(concurrency))
    // Every counted window starts from the same heap: a window that happens to hold a major GC
    // and one that does not would differ by more than the plugin costs.
    ;(globalThis as { gc?: () => void }).gc?.()
    const before = oldGeneration()
    process.stdout.write('warm\n')
    await told('go')
    await drive(variant, Number(requests), Number(concurrency))
    // What the window promoted to the old generation: the work it leaves for major GCs, which
    // the driver keeps out of the window (see instructions.ts). Smaller than before: one ran.
    process.stdout.write(`done ${oldGeneration() - before}\n`)
    await told('exit')
  } finally {
    await closeVariant(variant)
    process.stdin.destroy()
  }
}

main().catch(fail)
