import { FST_FORK_SAFE_DB_INVALID_OPTION } from '../errors'
import type { MeterProviderLike } from '../options/resolve-options'

// `@opentelemetry/api` is an optional peer dependency: loaded only when `metrics` is on, at
// registration, so a missing package fails there with a coded error that names it. The shapes
// below are the few parts of the API the plugin calls, written out so that no emitted .d.ts
// names the package (a user without it still compiles against ours).

export type MetricAttributes = Readonly<Record<string, string | number>>

export interface HistogramLike {
  record: (value: number, attributes?: MetricAttributes) => void
}

export interface CounterLike {
  add: (value: number, attributes?: MetricAttributes) => void
}

/** An observable instrument: read by a batch callback at collection time. */
export type ObservableLike = object

export interface BatchObservableResultLike {
  observe: (observable: ObservableLike, value: number, attributes?: MetricAttributes) => void
}

export type BatchObservableCallbackLike = (result: BatchObservableResultLike) => void

export interface InstrumentOptionsLike {
  description: string
  unit: string
  advice?: { explicitBucketBoundaries?: number[] }
}

export interface MeterLike {
  createHistogram: (name: string, options: InstrumentOptionsLike) => HistogramLike
  createCounter: (name: string, options: InstrumentOptionsLike) => CounterLike
  createObservableUpDownCounter: (name: string, options: InstrumentOptionsLike) => ObservableLike
  addBatchObservableCallback: (callback: BatchObservableCallbackLike, observables: ObservableLike[]) => void
  removeBatchObservableCallback: (callback: BatchObservableCallbackLike, observables: ObservableLike[]) => void
}

export interface OtelApi {
  metrics: { getMeterProvider: () => MeterProviderLike }
  /** The API's no-op meter: what the global provider gives while no SDK is registered. */
  createNoopMeter: () => object
}

const PACKAGE = '@opentelemetry/api'

/** The API, or FST_FORK_SAFE_DB_INVALID_OPTION naming the package when it cannot be loaded. */
export function loadOtelApi (): OtelApi {
  let api: Partial<OtelApi> | undefined
  try {
    api = require(PACKAGE) as Partial<OtelApi>
  } catch (error) {
    throw new FST_FORK_SAFE_DB_INVALID_OPTION(
      `metrics needs the package ${PACKAGE} (an optional peer dependency, 1.7 or later): install it next to the plugin, or leave metrics off; it could not be loaded`,
      { cause: error }
    )
  }
  if (typeof api?.metrics?.getMeterProvider !== 'function' || typeof api.createNoopMeter !== 'function') {
    throw new FST_FORK_SAFE_DB_INVALID_OPTION(`metrics needs ${PACKAGE} 1.7 or later, got one without metrics.getMeterProvider or createNoopMeter`)
  }
  return api as OtelApi
}

/**
 * The API's no-op meter (no SDK registered when the pool was built, or a no-op provider given):
 * recording into it does nothing, so the plugin does not subscribe at all.
 */
export function isNoopMeter (api: OtelApi, meter: unknown): boolean {
  const noop = api.createNoopMeter()
  return meter === noop || (typeof meter === 'object' && meter !== null && meter.constructor === noop.constructor)
}
