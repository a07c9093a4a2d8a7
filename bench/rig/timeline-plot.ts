// A dependency-free SVG timeline: panels stacked on one time axis (seconds), each with its own
// y axis, lines (drawn as steps for sampled gauges, gaps where a value is NaN) or dots, and a
// legend; vertical markers (a worker appeared, a worker left, a signal) run through every panel.

export interface TimelineLine {
  name: string
  /** [seconds, value]; a NaN value leaves a gap. */
  points: ReadonlyArray<readonly [number, number]>
  colour: string
  style?: 'solid' | 'dotted' | 'dashed'
  width?: number
  /** A gauge holds its value until the next sample: draw steps, not slopes. */
  step?: boolean
  /** Dots only, no line (one per request, say). */
  dots?: boolean
  /** Left out of the legend (one of many thin lines of a kind already named). */
  unlisted?: boolean
}

export interface TimelinePanel {
  title: string
  unit: string
  lines: readonly TimelineLine[]
  /** Panel height in pixels (default 200). */
  height?: number
  /** A log y axis (values <= 0 are left out). */
  log?: boolean
}

export interface TimelineMarker {
  /** Seconds. */
  at: number
  label: string
  colour: string
}

const WIDTH = 960
const MARGIN = { left: 64, right: 190, top: 26, bottom: 26 }
const DASH = { solid: '', dotted: ' stroke-dasharray="2 3"', dashed: ' stroke-dasharray="7 4"' }

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
const round = (value: number) => value.toFixed(1)

/** A "nice" step (1, 2 or 5 times a power of ten) giving about `count` ticks over `span`. */
function niceStep (span: number, count: number): number {
  const raw = span / Math.max(1, count)
  const power = 10 ** Math.floor(Math.log10(raw))
  const step = [1, 2, 5, 10].map((factor) => factor * power).find((candidate) => candidate >= raw)
  return step ?? 10 * power
}

const label = (value: number) => Number.isInteger(value) ? String(value) : Number(value.toPrecision(3)).toString()

/** Path segments of one line, split at NaN values. */
function segments (line: TimelineLine, x: (t: number) => number, y: (v: number) => number, usable: (v: number) => boolean): string[] {
  const paths: string[] = []
  let current: string[] = []
  let previousY: number | undefined
  for (const [t, value] of line.points) {
    if (!usable(value)) {
      if (current.length > 1) paths.push(current.join(' '))
      current = []
      previousY = undefined
      continue
    }
    const px = round(x(t))
    const py = round(y(value))
    if (current.length === 0) current.push(`M${px} ${py}`)
    else if (line.step === true && previousY !== undefined) current.push(`H${px} V${py}`)
    else current.push(`L${px} ${py}`)
    previousY = y(value)
  }
  if (current.length > 1) paths.push(current.join(' '))
  return paths
}

function panelSvg (panel: TimelinePanel, top: number, from: number, to: number, markers: readonly TimelineMarker[]): string {
  const height = panel.height ?? 200
  const plotTop = top + MARGIN.top
  const plotBottom = top + height - MARGIN.bottom
  const plotLeft = MARGIN.left
  const plotRight = WIDTH - MARGIN.right
  const log = panel.log === true
  const usable = (value: number) => Number.isFinite(value) && (!log || value > 0)
  const values = panel.lines.flatMap((line) => line.points.map(([, value]) => value)).filter(usable)
  const highest = values.length === 0 ? 1 : Math.max(...values)
  const lowest = values.length === 0 ? 1 : Math.min(...values)
  const x = (t: number) => plotLeft + ((t - from) / Math.max(1e-9, to - from)) * (plotRight - plotLeft)
  let y: (value: number) => number
  let ticks: number[]
  if (log) {
    const low = 10 ** Math.floor(Math.log10(lowest))
    const high = 10 ** Math.ceil(Math.log10(highest * 1.0001))
    y = (value) => plotBottom - ((Math.log10(value) - Math.log10(low)) / Math.max(1e-9, Math.log10(high) - Math.log10(low))) * (plotBottom - plotTop)
    ticks = []
    for (let tick = low; tick <= high * 1.0001; tick *= 10) ticks.push(tick)
  } else {
    const step = niceStep(highest, 4)
    const high = Math.max(step, Math.ceil((highest * 1.05) / step) * step)
    y = (value) => plotBottom - (value / high) * (plotBottom - plotTop)
    ticks = []
    for (let tick = 0; tick <= high + step / 2; tick += step) ticks.push(tick)
  }
  const grid = ticks.map((tick) => `<line x1="${plotLeft}" x2="${plotRight}" y1="${round(y(tick))}" y2="${round(y(tick))}" stroke="#e5e5e5"/>` +
    `<text x="${plotLeft - 6}" y="${round(y(tick) + 3)}" text-anchor="end" font-size="10">${label(tick)}</text>`).join('')
  const lines = panel.lines.map((line) => {
    if (line.dots === true) {
      return line.points.filter(([, value]) => usable(value)).map(([t, value]) =>
        `<circle cx="${round(x(t))}" cy="${round(y(value))}" r="1.4" fill="${line.colour}"/>`).join('')
    }
    const stroke = `fill="none" stroke="${line.colour}" stroke-width="${line.width ?? 1.6}"${DASH[line.style ?? 'solid']}`
    return segments(line, x, y, usable).map((d) => `<path d="${d}" ${stroke}/>`).join('')
  }).join('\n')
  const rules = markers.map((marker) =>
    `<line x1="${round(x(marker.at))}" x2="${round(x(marker.at))}" y1="${plotTop}" y2="${plotBottom}" stroke="${marker.colour}" stroke-width="1" stroke-dasharray="3 3"/>`).join('')
  const listed = panel.lines.filter((line) => line.unlisted !== true)
  const legend = listed.map((line, index) => {
    const ly = plotTop + 8 + index * 16
    const sample = line.dots === true
      ? `<circle cx="${plotRight + 22}" cy="${ly}" r="2.5" fill="${line.colour}"/>`
      : `<line x1="${plotRight + 12}" x2="${plotRight + 32}" y1="${ly}" y2="${ly}" stroke="${line.colour}" stroke-width="${line.width ?? 1.6}"${DASH[line.style ?? 'solid']}/>`
    return `${sample}<text x="${plotRight + 38}" y="${ly + 4}" font-size="11">${escape(line.name)}</text>`
  }).join('')
  return `<g>
<text x="${plotLeft}" y="${top + 16}" font-size="13" font-weight="bold">${escape(panel.title)}</text>
<text transform="translate(14 ${round((plotTop + plotBottom) / 2)}) rotate(-90)" text-anchor="middle" font-size="10">${escape(panel.unit)}${log ? ' (log scale)' : ''}</text>
${grid}${rules}
<line x1="${plotLeft}" x2="${plotLeft}" y1="${plotTop}" y2="${plotBottom}" stroke="#888"/>
<line x1="${plotLeft}" x2="${plotRight}" y1="${plotBottom}" y2="${plotBottom}" stroke="#888"/>
${lines}
${legend}
</g>`
}

/**
 * The timeline from `from` to `to` (seconds): `panels` top to bottom, `markers` through all of
 * them, labelled above the first. `notes` are lines of small text under the title.
 */
export function timelinePlot (
  title: string,
  notes: readonly string[],
  panels: readonly TimelinePanel[],
  markers: readonly TimelineMarker[],
  from: number,
  to: number
): string {
  const header = 30 + notes.length * 15 + 70
  let top = header
  const bodies = panels.map((panel) => {
    const body = panelSvg(panel, top, from, to, markers)
    top += panel.height ?? 200
    return body
  })
  const x = (t: number) => MARGIN.left + ((t - from) / Math.max(1e-9, to - from)) * (WIDTH - MARGIN.left - MARGIN.right)
  // Marker labels stand upright above the first panel, reading upwards from its top; markers
  // closer than a label's height are labelled side by side.
  let lastLabel = Number.NEGATIVE_INFINITY
  const labels = [...markers].sort((a, b) => a.at - b.at).map((marker) => {
    const labelX = Math.max(x(marker.at) + 3, lastLabel + 11)
    lastLabel = labelX
    return `<text transform="translate(${round(labelX)} ${header - 4}) rotate(-90)" font-size="10" fill="${marker.colour}">${escape(marker.label)}</text>`
  }).join('')
  const step = niceStep(to - from, 10)
  const axisY = top - MARGIN.bottom
  const timeTicks: string[] = []
  for (let t = Math.ceil(from / step) * step; t <= to + 1e-9; t += step) {
    timeTicks.push(`<line x1="${round(x(t))}" x2="${round(x(t))}" y1="${axisY}" y2="${axisY + 4}" stroke="#888"/>` +
      `<text x="${round(x(t))}" y="${axisY + 15}" text-anchor="middle" font-size="10">${label(t)}</text>`)
  }
  const height = top + 12
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${MARGIN.left}" y="20" font-size="15">${escape(title)}</text>
${notes.map((note, index) => `<text x="${MARGIN.left}" y="${38 + index * 15}" font-size="11" fill="#444">${escape(note)}</text>`).join('\n')}
${labels}
${bodies.join('\n')}
${timeTicks.join('')}
<text x="${WIDTH - MARGIN.right}" y="${height - 2}" text-anchor="end" font-size="10">seconds</text>
</svg>
`
}
