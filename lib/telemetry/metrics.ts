import { join } from 'node:path'
import type { FastifyBaseLogger } from 'fastify'
import { packageVersion } from '../driver/package-root'
import type { PoolIdentity } from '../events/channels'
import type { ResolvedMetrics } from '../options/resolve-options'
import { createInstruments, observablesOf } from './instruments'
import { meterEvents, stopMetering } from './metrics-subscriber'
import { isNoopMeter, loadOtelApi, type BatchObservableCallbackLike, type MeterLike, type OtelApi } from './otel-api'
import { PoolMeters, type MeteredPool } from './pool-meters'
import { METER_NAME } from './semconv'

// The `metrics` option of one registration. The API is loaded at registration (a missing
// package fails there); the meter is taken when a process builds its pool (at ready(), or its
// first query), so an SDK registered before the app is ready is the one used. A meter that is
// the API's no-op one (no SDK registered by then) meters nothing and subscribes to nothing:
// metrics on without an SDK cost nothing per request.

/** Stops metering one built pool: no more recording, its observable callback removed. */
export interface PoolMetricsHandle {
  stop: () => void
}

let version: string | undefined

/** The plugin's own version, for the meter (package.json two levels up, from lib/ or dist/). */
function pluginVersion (): string | undefined {
  version ??= packageVersion(join(__dirname, '..', '..'))
  return version
}

export class RegistrationMetrics {
  readonly #api: OtelApi
  readonly #options: ResolvedMetrics
  readonly #log: FastifyBaseLogger

  /** Throws FST_FORK_SAFE_DB_INVALID_OPTION when `@opentelemetry/api` cannot be loaded. */
  constructor (options: ResolvedMetrics, log: FastifyBaseLogger) {
    this.#api = loadOtelApi()
    this.#options = options
    this.#log = log
  }

  /** Meters the pool `identity` just built; undefined when the meter is the no-op one. */
  start (identity: PoolIdentity, pool: MeteredPool): PoolMetricsHandle | undefined {
    const provider = this.#options.meterProvider ?? this.#api.metrics.getMeterProvider()
    const meter = provider.getMeter(METER_NAME, pluginVersion()) as MeterLike
    if (isNoopMeter(this.#api, meter)) {
      this.#log.debug('metrics: the meter provider is OpenTelemetry\'s no-op one (no SDK was registered before the pool was built): this pool records none')
      return undefined
    }
    const instruments = createInstruments(meter)
    const observables = observablesOf(instruments)
    const meters = new PoolMeters(instruments, this.#options.poolName, pool, this.#options.operationFromText)
    const observe: BatchObservableCallbackLike = (result) => meters.observe(result)
    meter.addBatchObservableCallback(observe, observables)
    meterEvents(identity, meters)
    return {
      stop: () => {
        stopMetering(identity)
        meter.removeBatchObservableCallback(observe, observables)
      }
    }
  }
}
