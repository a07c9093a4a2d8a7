import { setTimeout as delay } from 'node:timers/promises'
import type { DriverConnection } from '../driver/types'
import { pingOrDiscard } from './borrow-check'

// Warm-up opens the connections a process keeps before it accepts requests. When a whole fleet
// (re)starts at once, workers x pool.min simultaneous handshakes hit the server; so a process
// opens at most `concurrency` at a time, optionally after a random delay, and the first
// connection goes alone: it reads the server's limits (idle timeout, connection limits) that
// may change how many connections this process should keep at all.
//
// Every connection is held until the end (or the pool would lend the same free one out again),
// and every one is given back however warm-up ends: when one lane fails, or the pool is
// destroyed meanwhile, the other lanes stop at once, a connection that arrives after that is
// released on arrival, and warm-up waits for its lanes before it releases what they hold. (A
// lane still acquiring would otherwise hold the pool's destroy() until the acquire timeout,
// and one that acquired after the release would keep a connection borrowed for ever.)

export interface WarmUpPlan {
  acquire: () => Promise<DriverConnection>
  release: (connection: DriverConnection) => Promise<unknown>
  count: number
  concurrency: number
  jitterMillis: number
  pingTimeoutMillis: number
  /** Aborted when the pool is destroyed. */
  signal: AbortSignal
  /** Runs on the first verified connection; returns how many connections to open in total. */
  afterFirst: (connection: DriverConnection) => Promise<number>
}

/** Opens and verifies the planned connections, then returns them all to the pool as its idle floor. */
export async function warmUp (plan: WarmUpPlan): Promise<void> {
  const stop = new AbortController()
  const destroyed = () => stop.abort(new Error('the pool was destroyed during warm-up'))
  if (plan.signal.aborted) destroyed()
  else plan.signal.addEventListener('abort', destroyed, { once: true })
  const held: DriverConnection[] = []
  const openOne = async () => {
    const connection = await untilStopped(plan.acquire(), stop.signal, plan.release)
    held.push(connection)
    await pingOrDiscard(connection, plan.pingTimeoutMillis)
    return connection
  }
  try {
    if (plan.jitterMillis > 0) await delay(Math.floor(Math.random() * plan.jitterMillis), undefined, { signal: stop.signal })
    const total = Math.min(plan.count, await plan.afterFirst(await openOne()))
    let remaining = total - 1
    const lane = async () => {
      while (remaining > 0) {
        stop.signal.throwIfAborted()
        remaining -= 1
        await openOne()
      }
    }
    const lanes = Array.from({ length: Math.min(plan.concurrency, Math.max(0, remaining)) }, () => lane().catch((error: unknown) => {
      stop.abort(error)
      throw error
    }))
    const outcomes = await Promise.allSettled(lanes)
    const failed = outcomes.find((outcome) => outcome.status === 'rejected')
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason
  } finally {
    plan.signal.removeEventListener('abort', destroyed)
    for (const connection of held) await plan.release(connection)
  }
}

/** `acquired`, or a rejection as soon as `signal` aborts; a connection that arrives later is released. */
function untilStopped (acquired: Promise<DriverConnection>, signal: AbortSignal, release: (connection: DriverConnection) => Promise<unknown>): Promise<DriverConnection> {
  const lateArrival = () => { acquired.then(release, () => {}).catch(() => {}) }
  if (signal.aborted) {
    lateArrival()
    return Promise.reject(signal.reason)
  }
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      lateArrival()
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, { once: true })
    acquired.then(
      (connection) => { signal.removeEventListener('abort', onAbort); resolve(connection) },
      (error: unknown) => { signal.removeEventListener('abort', onAbort); reject(error) }
    )
  })
}
