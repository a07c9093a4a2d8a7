import type * as Tarn from 'tarn'
import { packageRoot } from './package-root'
import type { DriverConnection } from './types'

// knex pools connections with tarn, and tarn's `Pool` is a class meant to be extended: the
// fields it keeps (its lists of free and borrowed connections, its live min and max, its queue
// of waiting acquires) are `protected` in its own typings. So the plugin's pool is a subclass,
// which knex builds in place of its own (client/fork-safe-client.ts, `initializePool`), and
// which reads those fields as a subclass may, with no cast. It is the same tarn knex loads (a
// different copy would be a different class with a different TimeoutError).

const tarn = require(packageRoot('tarn', packageRoot('knex')) ?? 'tarn') as typeof Tarn

/** Whether `error` is tarn's: no connection became free within the acquire timeout. */
export function isAcquireTimeout (error: unknown): boolean {
  return error instanceof tarn.TimeoutError
}

type TarnPoolSettings = ConstructorParameters<typeof tarn.Pool<DriverConnection>>[0]

/**
 * The plugin's pool, from the settings knex computes for its own (`client.getPoolSettings()`),
 * as knex builds its own from them: knex's `afterCreate` is knex's to run, and tarn refuses an
 * option it does not know (knex 3.2.0 removes it as it builds the pool; later releases in
 * getPoolSettings()).
 */
export function poolFromKnexSettings (settings: object): ForkSafeTarnPool {
  const tarnSettings = { ...settings } as TarnPoolSettings & { afterCreate?: unknown }
  delete tarnSettings.afterCreate
  return new ForkSafeTarnPool(tarnSettings)
}

/** The plugin's pool of a knex client (its client subclass builds one), undefined once destroyed. */
export function poolOf (client: { pool?: unknown }): ForkSafeTarnPool | undefined {
  return client.pool as ForkSafeTarnPool | undefined
}

export class ForkSafeTarnPool extends tarn.Pool<DriverConnection> {
  /** True once destroy() began: the pool lends nothing more. */
  get isDestroyed (): boolean {
    return this.destroyed
  }

  get size (): { min: number, max: number } {
    return { min: this.min, max: this.max }
  }

  /** tarn reads min and max on every decision, so a live change takes effect at once. */
  resize (size: { min: number, max: number }): void {
    this.max = size.max
    this.min = size.min
  }

  /** Connections lent out right now (including those being validated for a borrower). */
  borrowedConnections (): DriverConnection[] {
    return this.used.map((used) => used.resource)
  }

  /** Connections idle in the pool right now. */
  idleConnections (): DriverConnection[] {
    return this.free.map((free) => free.resource)
  }

  /**
   * Destroys now the idle connections `which` picks, as tarn's reaper destroys an idle one: out
   * of the free list first, so no borrow can take them. Returns them.
   */
  destroyIdle (which: (connection: DriverConnection) => boolean): DriverConnection[] {
    const destroyed: DriverConnection[] = []
    if (this.destroyed) return destroyed
    this.free = this.free.filter((free) => {
      if (!which(free.resource)) return true
      free.settle()
      destroyed.push(free.resource)
      return false
    })
    // tarn's _destroy reports its own failures to the pool's listeners; it never rejects.
    for (const connection of destroyed) this._destroy(connection)
    return destroyed
  }

  /**
   * Takes back a borrowed connection and destroys it instead of keeping it (tarn's release, then
   * its reaper's destroy); a borrow waiting for a connection gets a new one. False when the pool
   * did not lend it.
   */
  releaseAndDestroy (connection: DriverConnection): boolean {
    const index = this.used.findIndex((used) => used.resource === connection)
    if (index === -1) return false
    this._executeEventHandlers('release', connection)
    this.used.splice(index, 1)[0]?.settle()
    this._destroy(connection)
    this._tryAcquireOrCreate()
    return true
  }

  /**
   * Opens `count` connections into the free list, as tarn opens one for a waiting borrow, but
   * without one: a refill to the warm floor never holds a free connection away from a query
   * while the new ones connect. Resolves how many were opened (failures are the pool
   * listeners' and the connect breaker's to report).
   */
  async open (count: number): Promise<number> {
    if (this.destroyed || count <= 0) return 0
    // As after tarn's own create, each one settled serves a borrow that queued meanwhile: tarn's
    // _create puts the connection in the free list without looking at the queue, and a borrow
    // that queued behind pending creates starts none of its own; waiting for the slowest connect
    // (one to a frozen host lasts connectTimeout) would leave it waiting beside a free connection.
    const settled = (created: boolean): boolean => {
      this._tryAcquireOrCreate()
      return created
    }
    const creates = Array.from({ length: count }, () => this._create().promise.then(() => settled(true), () => settled(false)))
    return (await Promise.all(creates)).filter(Boolean).length
  }

  /**
   * A connection: lent directly when one is free, no acquire waits ahead, and `mayLendDirectly`
   * says its check cannot wait on anything unbounded; otherwise through tarn's queue, with its
   * deadline (see pool/direct-borrow.ts for why).
   */
  acquireConnection (mayLendDirectly: (connection: DriverConnection) => boolean): Promise<DriverConnection> {
    return this.#lendDirectly(mayLendDirectly) ?? this.acquire().promise
  }

  // What tarn's acquire does for a free connection, step for step, without its queue: the
  // connection tarn would lend next (the last one released) moves from the free list to the
  // borrowed one before its check, tarn's listeners hear the same events with the same ids, and
  // a connection that fails its check is destroyed as tarn destroys one.
  #lendDirectly (mayLendDirectly: (connection: DriverConnection) => boolean): Promise<DriverConnection> | undefined {
    if (this.destroyed || this.pendingAcquires.length > 0) return undefined
    const resource = this.free[this.free.length - 1]
    if (resource === undefined || !mayLendDirectly(resource.resource)) return undefined
    const eventId = this.eventId++
    this._executeEventHandlers('acquireRequest', eventId)
    this.free.pop()
    this.used.push(resource)
    const failed = (): Promise<DriverConnection> => {
      const index = this.used.indexOf(resource)
      if (index !== -1) this.used.splice(index, 1)
      resource.settle()
      // tarn's _destroy reports its own failures to the pool's listeners; it never rejects.
      this._destroy(resource.resource)
      this._tryAcquireOrCreate()
      return this.acquireConnection(mayLendDirectly)
    }
    let verdict: unknown
    try {
      // The check tarn runs on a connection it lends: knex's `pool.validate`.
      verdict = this.validate(resource.resource)
    } catch {
      // tarn counts a check that throws as failed (knex's is async and rejects instead).
      return failed()
    }
    // tarn lends on any truthy answer.
    return Promise.resolve(verdict).then((valid) => {
      if (!valid) return failed()
      this._startReaping()
      this._executeEventHandlers('acquireSuccess', eventId, resource.resource)
      return resource.resource
    }, failed)
  }
}
