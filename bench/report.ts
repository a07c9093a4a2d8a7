import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

// Percentiles, markdown tables and the results folder, shared by the benchmarks.

export const RESULTS_DIR = join(__dirname, '..', '..', 'bench', 'results')

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
