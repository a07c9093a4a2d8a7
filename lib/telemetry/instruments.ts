import type { CounterLike, HistogramLike, InstrumentOptionsLike, MeterLike, ObservableLike } from './otel-api'
import * as semconv from './semconv'

// The plugin's instruments on one meter. Creating the same instrument twice on a meter gives the
// same stream in the SDK, so every registration of a process shares them, told apart by
// `db.client.connection.pool.name`.

export interface Instruments {
  readonly operationDuration: HistogramLike
  readonly createTime: HistogramLike
  readonly waitTime: HistogramLike
  readonly useTime: HistogramLike
  readonly timeouts: CounterLike
  readonly count: ObservableLike
  readonly idleMax: ObservableLike
  readonly idleMin: ObservableLike
  readonly max: ObservableLike
  readonly pendingRequests: ObservableLike
}

function options (spec: semconv.InstrumentSpec, buckets?: readonly number[]): InstrumentOptionsLike {
  return buckets === undefined
    ? { description: spec.description, unit: spec.unit }
    : { description: spec.description, unit: spec.unit, advice: { explicitBucketBoundaries: [...buckets] } }
}

export function createInstruments (meter: MeterLike): Instruments {
  const seconds = (spec: semconv.InstrumentSpec) => meter.createHistogram(spec.name, options(spec, semconv.DURATION_BUCKETS_SECONDS))
  const gauge = (spec: semconv.InstrumentSpec) => meter.createObservableUpDownCounter(spec.name, options(spec))
  return {
    operationDuration: seconds(semconv.OPERATION_DURATION),
    createTime: seconds(semconv.CONNECTION_CREATE_TIME),
    waitTime: seconds(semconv.CONNECTION_WAIT_TIME),
    useTime: seconds(semconv.CONNECTION_USE_TIME),
    timeouts: meter.createCounter(semconv.CONNECTION_TIMEOUTS.name, options(semconv.CONNECTION_TIMEOUTS)),
    count: gauge(semconv.CONNECTION_COUNT),
    idleMax: gauge(semconv.CONNECTION_IDLE_MAX),
    idleMin: gauge(semconv.CONNECTION_IDLE_MIN),
    max: gauge(semconv.CONNECTION_MAX),
    pendingRequests: gauge(semconv.CONNECTION_PENDING_REQUESTS)
  }
}

/** The instruments read at collection time, for the batch callback. */
export function observablesOf (instruments: Instruments): ObservableLike[] {
  return [instruments.count, instruments.idleMax, instruments.idleMin, instruments.max, instruments.pendingRequests]
}
