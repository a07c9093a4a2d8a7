import type { Attributes } from '@opentelemetry/api'
import { PrometheusSerializer } from '@opentelemetry/exporter-prometheus'
import { emptyResource } from '@opentelemetry/resources'
import type { MetricData, ScopeMetrics } from '@opentelemetry/sdk-metrics'

// Prometheus' text format for the metrics of several workers at once. OpenTelemetry's own
// serializer writes it (names with dots as underscores, `_total` on counters, histograms as
// buckets), given one set of metrics in which every worker's series carry its pid: all workers'
// series of one metric then share one HELP and TYPE, as the format requires (each worker
// serialized alone would repeat them, which Prometheus rejects).

/** What one worker answered: its resource's attributes and its meters' metrics (JSON). */
export interface WorkerMetrics { resource: Attributes, scopeMetrics: ScopeMetrics[] }

/** The unit suffixes OpenTelemetry's Prometheus naming adds; annotations (`{connection}`) add none. */
const UNIT_WORDS: Record<string, string> = { s: 'seconds', ms: 'milliseconds', By: 'bytes' }

// No target_info: the serializer writes one, for one resource, and each worker has its own. The
// pid is on every series instead, so no two workers' series collide.
const serializer = new PrometheusSerializer(undefined, false, undefined, true)

/**
 * How the workers of one scrape fared: `answered` (their metrics are in it), `starting` (no pool
 * yet) and `leaving` (pool closed), neither asked since they hold no connection, and `missing`
 * (asked, no answer in time: left out, so the totals lack their connections).
 */
export interface WorkerOutcomes { answered: number, starting: number, leaving: number, missing: number }

/** The workers' metrics, each series labelled `process_pid`, followed by `example_metrics_workers{outcome}`. */
export function renderPrometheus (workers: readonly WorkerMetrics[], outcomes: Omit<WorkerOutcomes, 'answered'>): string {
  const scopeMetrics = workers.flatMap((worker) => worker.scopeMetrics.map((scope) => ({
    scope: scope.scope,
    metrics: scope.metrics.map((metric) => labelled(metric, worker.resource['process.pid']))
  })))
  // Each family ends with a newline; with no metric at all the serializer writes a comment without one.
  const series = scopeMetrics.some((scope) => scope.metrics.length > 0) ? serializer.serialize({ resource: emptyResource(), scopeMetrics }) : ''
  const counts: WorkerOutcomes = { answered: workers.length, starting: outcomes.starting, leaving: outcomes.leaving, missing: outcomes.missing }
  return series +
    '# HELP example_metrics_workers Workers in this scrape, by outcome: answered; starting (no pool yet) or leaving (pool closed), not asked; missing (asked, no answer in time: left out).\n' +
    '# TYPE example_metrics_workers gauge\n' +
    Object.entries(counts).map(([outcome, count]) => `example_metrics_workers{outcome="${outcome}"} ${count}\n`).join('')
}

/** The metric with its unit as a name suffix and the worker's pid on every data point. */
function labelled<T extends MetricData> (metric: T, pid: Attributes[string]): T {
  const word = UNIT_WORDS[metric.descriptor.unit]
  const name = word === undefined || metric.descriptor.name.endsWith(`.${word}`) ? metric.descriptor.name : `${metric.descriptor.name}.${word}`
  return {
    ...metric,
    descriptor: { ...metric.descriptor, name, unit: word ?? '' },
    dataPoints: metric.dataPoints.map((point) => ({ ...point, attributes: { ...point.attributes, 'process.pid': pid } }))
  }
}
