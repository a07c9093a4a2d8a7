// A tolerant reader of Prometheus' text exposition format (0.0.4, and the OpenMetrics lines it
// shares): enough for a benchmark to read what a scrape says, not a validator. Each sample line
// `name{label="value",...} value [timestamp]` becomes one sample; `# TYPE` and `# HELP` lines are
// kept by metric name; blank lines, other comments and `# EOF` are skipped. A line it cannot read
// is kept in `skipped` instead of failing the whole scrape: one odd line from an exporter should
// not cost every other series, and the caller decides whether a skipped line matters.

export interface Sample {
  name: string
  labels: Readonly<Record<string, string>>
  value: number
  /** Milliseconds since the epoch, when the line carried one. */
  timestamp?: number
}

export interface Exposition {
  samples: Sample[]
  /** `# TYPE` by metric name (counter, gauge, histogram, summary, untyped, ...). */
  types: Map<string, string>
  /** `# HELP` by metric name, unescaped. */
  help: Map<string, string>
  /** Lines that were neither a sample, a comment nor blank, as they came. */
  skipped: string[]
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/

/** Prometheus' float spellings, besides what Number() reads: NaN, +Inf, -Inf (any case). */
function parseValue (text: string): number | undefined {
  const lower = text.toLowerCase()
  if (lower === 'nan') return Number.NaN
  if (lower === '+inf' || lower === 'inf') return Number.POSITIVE_INFINITY
  if (lower === '-inf') return Number.NEGATIVE_INFINITY
  if (text === '' || !/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) return undefined
  return Number(text)
}

/** `\\`, `\"` and `\n` inside a label value or a HELP text. */
function unescape (text: string): string {
  return text.replace(/\\(["\\n])/g, (_, char: string) => char === 'n' ? '\n' : char)
}

/** Reads `{a="1",b="2"}` from the start of `text`; returns the labels and what follows, or undefined. */
function parseLabels (text: string): { labels: Record<string, string>, rest: string } | undefined {
  const labels: Record<string, string> = {}
  let at = 1
  for (;;) {
    while (text[at] === ' ' || text[at] === '\t' || text[at] === ',') at++
    if (text[at] === '}') return { labels, rest: text.slice(at + 1) }
    const name = LABEL_NAME.exec(text.slice(at))?.[0]
    if (name === undefined) return undefined
    at += name.length
    while (text[at] === ' ' || text[at] === '\t') at++
    if (text[at] !== '=') return undefined
    at++
    while (text[at] === ' ' || text[at] === '\t') at++
    if (text[at] !== '"') return undefined
    // The value runs to the first quote not escaped by a backslash.
    let end = at + 1
    while (end < text.length && text[end] !== '"') end += text[end] === '\\' ? 2 : 1
    if (end >= text.length) return undefined
    labels[name] = unescape(text.slice(at + 1, end))
    at = end + 1
  }
}

function parseSample (line: string): Sample | undefined {
  const name = NAME.exec(line)?.[0]
  if (name === undefined) return undefined
  let rest = line.slice(name.length)
  let labels: Record<string, string> = {}
  if (rest.startsWith('{')) {
    const parsed = parseLabels(rest)
    if (parsed === undefined) return undefined
    labels = parsed.labels
    rest = parsed.rest
  }
  if (rest !== '' && rest[0] !== ' ' && rest[0] !== '\t') return undefined
  const fields = rest.trim().split(/\s+/)
  const value = parseValue(fields[0] ?? '')
  if (value === undefined || fields.length > 2) return undefined
  if (fields.length === 1) return { name, labels, value }
  const timestamp = parseValue(fields[1])
  if (timestamp === undefined || !Number.isFinite(timestamp)) return undefined
  return { name, labels, value, timestamp }
}

export function parsePrometheusText (text: string): Exposition {
  const exposition: Exposition = { samples: [], types: new Map(), help: new Map(), skipped: [] }
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim()
    if (line === '') continue
    if (line.startsWith('#')) {
      const meta = /^#\s*(TYPE|HELP)\s+([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\s+(.*))?$/.exec(line)
      if (meta?.[1] === 'TYPE') exposition.types.set(meta[2], (meta[3] ?? '').trim().toLowerCase())
      if (meta?.[1] === 'HELP') exposition.help.set(meta[2], unescape(meta[3] ?? ''))
      continue
    }
    const sample = parseSample(line)
    if (sample === undefined) exposition.skipped.push(raw)
    else exposition.samples.push(sample)
  }
  return exposition
}

/** The samples named `name` whose labels include every pair of `match`. */
export function select (samples: readonly Sample[], name: string, match: Readonly<Record<string, string>> = {}): Sample[] {
  return samples.filter((sample) => sample.name === name &&
    Object.entries(match).every(([label, value]) => sample.labels[label] === value))
}

/** The sum of the values of `select(samples, name, match)`; 0 when there are none. */
export function total (samples: readonly Sample[], name: string, match: Readonly<Record<string, string>> = {}): number {
  return select(samples, name, match).reduce((sum, sample) => sum + sample.value, 0)
}

/** Sums `name`'s samples by the value of `label` (samples without it are left out). */
export function totalBy (samples: readonly Sample[], name: string, label: string, match: Readonly<Record<string, string>> = {}): Map<string, number> {
  const sums = new Map<string, number>()
  for (const sample of select(samples, name, match)) {
    const key = sample.labels[label]
    if (key !== undefined) sums.set(key, (sums.get(key) ?? 0) + sample.value)
  }
  return sums
}

/** A histogram's cumulative buckets (`le` to count, `+Inf` last), sum and count. */
export interface HistogramState {
  buckets: Map<number, number>
  sum: number
  count: number
}

/**
 * The histogram `base` (its `_bucket`, `_sum` and `_count` series) of the samples that match,
 * summed over every other label: several series (several processes, say) add up bucket by bucket.
 */
export function histogram (samples: readonly Sample[], base: string, match: Readonly<Record<string, string>> = {}): HistogramState {
  const buckets = new Map<number, number>()
  for (const sample of select(samples, `${base}_bucket`, match)) {
    const le = parseValue(sample.labels.le ?? '')
    if (le === undefined || Number.isNaN(le)) continue
    buckets.set(le, (buckets.get(le) ?? 0) + sample.value)
  }
  const sorted = new Map([...buckets].sort(([a], [b]) => a - b))
  return { buckets: sorted, sum: total(samples, `${base}_sum`, match), count: total(samples, `${base}_count`, match) }
}

/** `later` minus `earlier`, bucket by bucket: what was observed between two scrapes of one series. */
export function histogramDelta (earlier: HistogramState, later: HistogramState): HistogramState {
  const buckets = new Map<number, number>()
  for (const [le, count] of later.buckets) buckets.set(le, count - (earlier.buckets.get(le) ?? 0))
  return { buckets, sum: later.sum - earlier.sum, count: later.count - earlier.count }
}

/**
 * The `q` quantile of a histogram, as Prometheus' histogram_quantile() estimates it: find the
 * bucket the rank falls in and interpolate linearly inside it (from 0 for the first bucket). A
 * rank in the +Inf bucket answers the highest finite bound. NaN with no observations.
 */
export function quantile (state: HistogramState, q: number): number {
  const bounds = [...state.buckets.entries()]
  const count = bounds.length === 0 ? 0 : bounds[bounds.length - 1][1]
  if (count <= 0) return Number.NaN
  const rank = q * count
  let lowerBound = 0
  let lowerCount = 0
  for (const [le, cumulative] of bounds) {
    if (cumulative >= rank) {
      if (le === Number.POSITIVE_INFINITY) return lowerBound
      const inBucket = cumulative - lowerCount
      return inBucket <= 0 ? le : lowerBound + (le - lowerBound) * ((rank - lowerCount) / inBucket)
    }
    lowerBound = le
    lowerCount = cumulative
  }
  return lowerBound
}

/**
 * The upper edge of the bucket that holds the `q` quantile: what the histogram knows for sure
 * (the quantile is at most this). Below the first bound, quantile()'s interpolation only restates
 * the bucket's width; this says so. +Inf when the rank is in the +Inf bucket; NaN with none.
 */
export function quantileBound (state: HistogramState, q: number): number {
  const bounds = [...state.buckets.entries()]
  const count = bounds.length === 0 ? 0 : bounds[bounds.length - 1][1]
  if (count <= 0) return Number.NaN
  const found = bounds.find(([, cumulative]) => cumulative >= q * count)
  return found === undefined ? Number.POSITIVE_INFINITY : found[0]
}
