// A dependency-free SVG scatter plot: one panel per variant, request index on x, latency (ms,
// log scale) on y, with the cold-request threshold drawn as a dashed line.

export interface PlotSeries {
  name: string
  latencies: readonly number[]
  threshold: number
}

const WIDTH = 900
const PANEL_HEIGHT = 180
const MARGIN = { left: 60, right: 20, top: 28, bottom: 30 }
const DASHED = 'stroke="#d62728" stroke-dasharray="4 3"'

export function latencyPlot (title: string, series: readonly PlotSeries[]): string {
  const all = series.flatMap((entry) => entry.latencies)
  const low = Math.max(1, Math.min(...all) * 0.8)
  const high = Math.max(...all) * 1.2
  const plotHeight = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom
  const y = (ms: number) =>
    PANEL_HEIGHT - MARGIN.bottom - ((Math.log(ms) - Math.log(low)) / (Math.log(high) - Math.log(low))) * plotHeight
  const panels = series.map((entry, index) => {
    const plotWidth = WIDTH - MARGIN.left - MARGIN.right
    const x = (i: number) => MARGIN.left + (i / Math.max(1, entry.latencies.length - 1)) * plotWidth
    const points = entry.latencies.map((ms, i) =>
      `<circle cx="${x(i).toFixed(1)}" cy="${y(ms).toFixed(1)}" r="1.6" ` +
      `fill="${ms > entry.threshold ? '#d62728' : '#1f77b4'}"/>`).join('')
    const ticks = [low, Math.sqrt(low * high), high].map((ms) =>
      `<text x="${MARGIN.left - 6}" y="${y(ms).toFixed(1)}" text-anchor="end" font-size="10">` +
      `${ms.toFixed(0)} ms</text>`).join('')
    const line = y(entry.threshold).toFixed(1)
    const caption = `request index (${entry.latencies.length} requests); red: slower than 1.8x median`
    return `<g transform="translate(0 ${index * PANEL_HEIGHT + 24})">
<text x="${MARGIN.left}" y="16" font-size="13" font-weight="bold">${entry.name}</text>
<line x1="${MARGIN.left}" x2="${WIDTH - MARGIN.right}" y1="${line}" y2="${line}" ${DASHED}/>
${ticks}${points}
<text x="${WIDTH - MARGIN.right}" y="${PANEL_HEIGHT - 8}" text-anchor="end" font-size="10">${caption}</text>
</g>`
  }).join('\n')
  const height = series.length * PANEL_HEIGHT + 30
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="${MARGIN.left}" y="18" font-size="15">${title}</text>
${panels}
</svg>
`
}
