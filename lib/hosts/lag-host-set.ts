import type { FastifyBaseLogger } from 'fastify'
import { discard } from '../driver/discard'
import { markDisposed } from '../driver/knex-parts'
import type { DriverConnection } from '../driver/types'
import { FST_FORK_SAFE_DB_REPLICA_LAG } from '../errors'
import type { PoolIdentity } from '../events/channels'
import { ConnectBreaker } from '../pool/connect-breaker'
import type { HostState } from './host'

// What the lag guard asks of a registration's hosts: which there are, and to take one out of
// rotation or put it back. hosts/host-set.ts's HostSet answers it for any number of hosts; until
// that is wired in, a one-host registration with a lag guard gets this breaker, which is the
// runtime's connect breaker plus one out-of-rotation state: while its host lags, no connection
// is opened, none is lent (idle ones are closed now, busy ones marked so the pool destroys them
// when they come back), and a query that finds none free fails with FST_FORK_SAFE_DB_REPLICA_LAG.

export interface HostEntry { readonly index: number, readonly label: string, readonly state: HostState }

/** The part of HostSet the lag guard uses. */
export interface LagHostSet {
  readonly hosts: readonly HostEntry[]
  /** Out of rotation: its connections retire (idle ones now, busy ones on release). */
  takeOut: (index: number, state: 'lagging') => void
  /** Back in rotation. */
  putBack: (index: number) => void
  /** The lag last read on host `index` (Infinity: not replicating), for the error's message. */
  noteLag?: (index: number, lagSeconds: number) => void
}

/** The connections of the pool, for retiring those of a host taken out. */
export interface PoolConnections {
  idle: () => readonly DriverConnection[]
  busy: () => readonly DriverConnection[]
}

const RETIRED = 'its host lags behind its primary'

export class LaggingHostBreaker extends ConnectBreaker implements LagHostSet {
  readonly hosts: readonly HostEntry[]
  readonly #entry: { index: number, label: string, state: HostState }
  readonly #decorator: string
  readonly #maxLagSeconds: number
  readonly #connections: PoolConnections
  #lagSeconds = 0

  constructor (identity: PoolIdentity, log: FastifyBaseLogger, label: string, maxLagSeconds: number, connections: PoolConnections) {
    super(identity, log)
    this.#entry = { index: 0, label, state: 'up' }
    this.hosts = [this.#entry]
    this.#decorator = identity.decorator
    this.#maxLagSeconds = maxLagSeconds
    this.#connections = connections
  }

  override isOpen (): boolean {
    return this.#entry.state === 'lagging' || super.isOpen()
  }

  override unavailable (): Error {
    if (this.#entry.state !== 'lagging') return super.unavailable()
    const lag = Number.isFinite(this.#lagSeconds) ? `${this.#lagSeconds} s` : 'not replicating'
    return new FST_FORK_SAFE_DB_REPLICA_LAG(this.#decorator, this.#maxLagSeconds, `${this.#entry.label}: ${lag}`)
  }

  override async attempt<T> (connect: () => Promise<T>): Promise<T> {
    if (this.#entry.state === 'lagging') throw this.unavailable()
    return super.attempt(connect)
  }

  takeOut (index: number, state: 'lagging'): void {
    if (index !== 0 || this.#entry.state === state) return
    this.#entry.state = state
    const reason = new Error(RETIRED)
    for (const connection of this.#connections.busy()) markDisposed(connection, reason)
    for (const connection of this.#connections.idle()) discard(connection, reason)
  }

  noteLag (index: number, lagSeconds: number): void {
    if (index === 0) this.#lagSeconds = lagSeconds
  }

  putBack (index: number): void {
    if (index === 0) this.#entry.state = 'up'
  }
}
