import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

// Percentiles, markdown tables and the results folder, shared by the benchmarks.

export const RESULTS_DIR = join(__dirname, '..', '..', '..', 'bench', 'results')

export function percentile (sorted: readonly number[], fraction: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)]
}

export function median (values: readonly number[]): number {
  return percentile([...values].sort((a, b) => a - b), 0.5)
}

/** A GitHub-flavoured markdown table; numbers are printed as given. */
export function table (header: readonly string[], rows: ReadonlyArray<ReadonlyArray<string | number>>): string {
  const line = (cells: ReadonlyArray<string | number>) => `| ${cells.join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}

export async function writeResult (name: string, content: string): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true })
  const path = join(RESULTS_DIR, name)
  await writeFile(path, content)
  return path
}

export const fixed = (value: number, digits = 1) => value.toFixed(digits)

/** "median (min-max)" of `values`, or n/a. */
export function spread (values: readonly number[], digits = 1): string {
  if (values.length === 0) return 'n/a'
  const sorted = [...values].sort((a, b) => a - b)
  return `${fixed(median(sorted), digits)} (${fixed(sorted[0], digits)}-${fixed(sorted[sorted.length - 1], digits)})`
}

/** Prints a benchmark's failure and exits non-zero. */
export function fail (error: unknown): void {
  process.stderr.write(`${String((error as Error)?.stack ?? error)}\n`)
  process.exit(1)
}

/**
 * A 95% bootstrap interval for `statistic` of `values`: the statistic of 2,000 resamples (with
 * replacement) of the values, its 2.5th and 97.5th percentiles. Seeded, so a report is
 * reproducible from its raw results.
 */
export function bootstrapInterval (
  values: readonly number[],
  statistic: (sample: readonly number[]) => number,
  resamples = 2000
): [number, number] {
  if (values.length === 0) return [Number.NaN, Number.NaN]
  let seed = 0x9e3779b9
  const random = () => {
    // mulberry32
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const estimates: number[] = []
  for (let i = 0; i < resamples; i++) {
    const sample = Array.from({ length: values.length }, () => values[Math.floor(random() * values.length)])
    estimates.push(statistic(sample))
  }
  estimates.sort((a, b) => a - b)
  return [percentile(estimates, 0.025), percentile(estimates, 0.975)]
}
