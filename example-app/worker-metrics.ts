import type { Attributes } from '@opentelemetry/api'
import type { FastifyInstance } from 'fastify'
import { MeterProvider, MetricReader, type ScopeMetrics } from '@opentelemetry/sdk-metrics'
import { resourceFromAttributes } from '@opentelemetry/resources'

// A worker's metrics: an OpenTelemetry SDK meter provider that the database plugin records into,
// read only when the primary asks over IPC (main.ts serves them all on GET /metrics). Nothing is
// pushed, and nothing runs between two scrapes.

export const SERVICE_NAME = 'users-api'

/** Primary -> worker: collect now and answer with the same id. */
export interface MetricsRequest { type: 'example:metrics', id: number }
/**
 * Worker -> primary: this process's metrics as plain JSON (the IPC channel serializes them): its
 * resource's attributes (`process.pid` among them) and what its meters recorded.
 */
export interface MetricsAnswer { type: 'example:metrics', id: number, resource: Attributes, scopeMetrics: ScopeMetrics[] }
/**
 * Worker -> primary, unasked: `answering` once it answers requests (before its pool is built),
 * `closed` once its pool has closed and it answers no more. Before the first and after the
 * second it holds no database connection, so the primary need not ask it (nor wait for it).
 */
export interface MetricsState { type: 'example:metrics-state', state: 'answering' | 'closed' }

export function isMetricsRequest (message: unknown): message is MetricsRequest {
  return typeof message === 'object' && message !== null &&
    (message as MetricsRequest).type === 'example:metrics' && typeof (message as MetricsRequest).id === 'number'
}

/** A reader that collects when asked to and at no other time (the SDK's readers push on a timer). */
class OnDemandReader extends MetricReader {
  protected override async onForceFlush (): Promise<void> {}
  protected override async onShutdown (): Promise<void> {}
}

/**
 * The meter provider to pass to the plugin's `metrics` option. Its resource names the process,
 * as every OpenTelemetry exporter would send it: `process.pid` (the label that tells workers
 * apart) and `service.name`.
 */
export function workerMeterProvider (): { meterProvider: MeterProvider, reader: MetricReader } {
  const reader = new OnDemandReader()
  const meterProvider = new MeterProvider({
    resource: resourceFromAttributes({ 'service.name': SERVICE_NAME, 'process.pid': process.pid }),
    readers: [reader]
  })
  return { meterProvider, reader }
}

/** With a callback, a channel closing meanwhile (the worker leaving) is reported, not thrown. */
function tellPrimary (message: MetricsAnswer | MetricsState): void {
  if (process.connected) process.send?.(message, undefined, undefined, () => {})
}

/**
 * Answers the primary's metrics requests until the pool has closed, then says so and shuts the
 * provider down. Call it BEFORE registering the database plugin: Fastify runs onClose hooks
 * last-added first, so this one runs after the plugin has closed its pool, and the worker answers
 * through its whole drain. A process with no IPC channel (started alone) has no one to answer.
 */
export function answerMetricsRequests (app: FastifyInstance, meterProvider: MeterProvider, reader: MetricReader): void {
  const onMessage = (message: unknown) => {
    if (!isMetricsRequest(message)) return
    reader.collect().then(({ resourceMetrics, errors }) => {
      if (errors.length > 0) app.log.warn({ errors }, 'some metrics could not be collected')
      tellPrimary({ type: 'example:metrics', id: message.id, resource: resourceMetrics.resource.attributes, scopeMetrics: resourceMetrics.scopeMetrics })
    }, (error: unknown) => app.log.warn({ err: error }, 'metrics collection failed'))
  }
  if (process.send !== undefined) {
    process.on('message', onMessage)
    tellPrimary({ type: 'example:metrics-state', state: 'answering' })
  }
  app.addHook('onClose', async () => {
    process.off('message', onMessage)
    tellPrimary({ type: 'example:metrics-state', state: 'closed' })
    await meterProvider.shutdown()
  })
}
