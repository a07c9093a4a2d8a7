import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { channels, type PoolAcquireEvent, type PoolConnectEvent, type PoolIdentity, type PoolReleaseEvent, type QueryEndEvent } from '../events/channels'
import type { PoolMeters } from './pool-meters'

// The metrics are subscribers of the plugin's channels, as stats() is: one subscriber per
// channel for every metered pool of the process, each pool's meters found by its identity. The
// subscribers are removed with the last metered pool, so a process whose pools closed (or that
// meters none) pays nothing on the paths that publish only when someone listens (a statement's
// end, a release's held time).

const ACQUIRE_TIMEOUT = 'FST_FORK_SAFE_DB_ACQUIRE_TIMEOUT'

const metered = new Map<PoolIdentity, PoolMeters>()

function onConnect (message: unknown): void {
  const event = message as PoolConnectEvent
  metered.get(event.pool)?.connected(event.host, event.connectMillis, event)
}

function onAcquire (message: unknown): void {
  const event = message as PoolAcquireEvent
  const meters = metered.get(event.pool)
  if (meters === undefined) return
  // The plugin's own borrows (warm-up, keeper, health check) are not the application's waits.
  if (event.internal) {
    if (event.connectionId !== undefined) meters.lentInternally(event.host ?? '', event.connectionId)
    return
  }
  if (event.connectionId !== undefined) meters.acquired(event.host ?? '', event.waitMillis)
  else if (event.errorCode === ACQUIRE_TIMEOUT) meters.timedOut()
}

function onRelease (message: unknown): void {
  const event = message as PoolReleaseEvent
  // undefined: lent before the metrics subscribed.
  if (event.heldMillis !== undefined) metered.get(event.pool)?.released(event.host, event.connectionId, event.heldMillis)
}

function onQueryEnd (message: unknown): void {
  const event = message as QueryEndEvent
  const failure = event.failed ? { code: event.errorCode, number: event.errorNumber } : undefined
  metered.get(event.pool)?.queried(event.host, event.method, event.sql, event.durationMillis, failure)
}

const SUBSCRIBERS: ReadonlyArray<readonly [string, (message: unknown) => void]> = [
  [channels.poolConnect, onConnect],
  [channels.poolAcquire, onAcquire],
  [channels.poolRelease, onRelease],
  [channels.queryEnd, onQueryEnd]
]

/** Records the events of the pool `identity` into `meters` from now on. */
export function meterEvents (identity: PoolIdentity, meters: PoolMeters): void {
  if (metered.size === 0) for (const [name, subscriber] of SUBSCRIBERS) subscribe(name, subscriber)
  metered.set(identity, meters)
}

/** The pool is gone (closed, or left to the process that built it): nothing more is recorded for it. */
export function stopMetering (identity: PoolIdentity): void {
  if (!metered.delete(identity) || metered.size > 0) return
  for (const [name, subscriber] of SUBSCRIBERS) unsubscribe(name, subscriber)
}
