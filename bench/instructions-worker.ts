import { createInterface } from 'node:readline'
import { buildVariant, closeVariant, drive } from './variants'

// Run under valgrind by bench/instructions.ts, with instrumentation off: builds one variant and
// warms it, says "warm" and waits for "go" (the driver has switched counting on), sends the
// requests, says "done" and waits for "exit" (counting is off again). Nothing is timed here.

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
    process.stdout.write('warm\n')
    await told('go')
    await drive(variant, Number(requests), Number(concurrency))
    process.stdout.write('done\n')
    await told('exit')
  } finally {
    await closeVariant(variant)
    process.stdin.destroy()
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${String((error as Error)?.stack ?? error)}\n`)
  process.exit(1)
})
