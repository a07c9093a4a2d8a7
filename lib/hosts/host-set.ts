import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import { discard } from '../driver/discard'
import type { DriverConnection } from '../driver/types'
import { FST_FORK_SAFE_DB_NODE_NOT_READY, FST_FORK_SAFE_DB_READ_ONLY, FST_FORK_SAFE_DB_REPLICA_LAG, FST_FORK_SAFE_DB_UNAVAILABLE } from '../errors'
import { codeOf, type PoolIdentity } from '../events/channels'
import { ConnectBreaker } from '../pool/connect-breaker'
import { connectionState } from '../pool/connection-state'
import type { RetireReason } from '../pool/retire'
import type { HostStats } from '../pool/stats'
import { classifyConnectError } from '../query/classify-error'
import type { HostPolicy, HostRole, HostState, RoleVerdict } from './host'
import { checkRoleWithin } from './role-check'

// Which host a new connection goes to, and which hosts are in rotation. Each host has its own
// connect breaker (its outage logged and published under its label). A host leaves the rotation
// when a connect to it fails, when a new connection's server has the wrong role (a read-only
// server for a `primary` registration, a Galera node that is not synced), when a statement
// says so (`refused`, from the roles policy), or when the lag guard takes it out; its pooled
// connections are retired then. A host out of rotation is not tried on a request's path while
// another host is in rotation (a frozen host would cost each such borrow a whole connect
// timeout): a background probe, one at a time per host, opens a connection, checks its role and
// closes it, after a back-off of 250 ms doubling to 2 s. The cap bounds how long a host that came
// back stays unused (ProxySQL checks every second, MariaDB's PoolCluster after one), at the cost
// of one connect every 2 s per host that is down. When no host is in rotation, a request's
// connect is the probe, as with one host: between probes, borrows fail fast with a coded 503.
// The moment the last host in rotation leaves, the others are due at once, their back-offs
// restarted (a switchover moves the role to a host that was set aside as read-only).
//
// One host with role `any` is exactly the plugin's single-host behaviour while it is in rotation:
// its breaker alone decides, nothing is probed in the background and no role is checked. Once a
// statement is answered not ready (1047) or the lag guard takes it out, it is out of rotation as
// any host of several would be: probed in the background, its role checked, until it is back.
//
// A host may leave the rotation while a connect to it is in flight (the retirement reaches only
// the connections that exist): a pool connection that lands on a host no longer in rotation is
// closed and the next host tried, so a lagging or refused host's connection is never lent.

const FIRST_PROBE_MILLIS = 250
const MAX_PROBE_MILLIS = 2000

/** One host as other policies see it (the lag guard, the roles check). */
export interface HostEntry {
  readonly index: number
  readonly label: string
  readonly state: HostState
}

/** Closes the pool's connections that `which` picks: idle ones now, busy ones when released. */
export interface RetireHost {
  retire: (which: (connection: DriverConnection) => boolean, reason: RetireReason) => number
}

export interface HostSetOptions {
  readonly identity: PoolIdentity
  readonly log: FastifyBaseLogger
  /** The registration's hosts, in order; a label is read live (a connection function's changes). */
  readonly hosts: ReadonlyArray<{ readonly label: string }>
  readonly policy: HostPolicy
  readonly role: HostRole
  /** The lag guard's bound, for the error when every host lags. */
  readonly maxReplicaLagSeconds?: number
  readonly retirer: RetireHost
  /** Opens a connection to host `index` outside the pool, for a background probe; it is added to `probing`. */
  readonly openProbe: (index: number) => Promise<DriverConnection>
  /** How long a new connection's role check may take. */
  readonly checkTimeoutMillis: number
}

class Host implements HostEntry {
  readonly index: number
  readonly breaker: ConnectBreaker
  readonly #address: { readonly label: string }
  state: HostState = 'up'
  /** Connect failures so far (a failed role check included). */
  failures = 0
  lastError: unknown
  /** Times it was taken out (or failed a probe) since it was last in rotation: the back-off's exponent. */
  outages = 0
  /** performance.now() before which neither a request nor a probe tries it. */
  retryAt = 0
  probing = false
  timer: NodeJS.Timeout | undefined
  /** The lag guard's last reading (Infinity: not replicating), for the REPLICA_LAG message. */
  lagSeconds: number | undefined

  constructor (index: number, address: { readonly label: string }, breaker: ConnectBreaker) {
    this.index = index
    this.#address = address
    this.breaker = breaker
  }

  get label (): string {
    return this.#address.label
  }
}

/** The host a pool connection is connected to (0 with one host). */
export function hostIndexOf (connection: DriverConnection): number {
  return connectionState(connection)?.hostIndex ?? 0
}

export class HostSet {
  readonly hosts: readonly HostEntry[]
  /** Probe connections open or opening: destroyed by stop(). */
  readonly probing = new Set<DriverConnection>()
  readonly #hosts: readonly Host[]
  readonly #first: Host
  readonly #options: HostSetOptions
  /** One host, role `any`: the single-host breaker path, exactly as before several hosts. */
  readonly #single: boolean
  #lastFailed: Host | undefined
  #stopped = false

  constructor (options: HostSetOptions) {
    this.#options = options
    const several = options.hosts.length > 1
    this.#hosts = options.hosts.map((address, index) => new Host(index, address, new ConnectBreaker(options.identity, options.log, address, several)))
    this.#first = this.#hosts[0]
    this.hosts = this.#hosts
    this.#single = !several && options.role === 'any'
  }

  /** True while no host is in rotation and none may be tried yet: borrows without a free connection fail fast. */
  isOpen (): boolean {
    if (this.#single && this.#first.state === 'up') return this.#first.breaker.isOpen()
    for (const host of this.#hosts) if (host.state === 'up') return false
    return this.#dueForRequest(new Set()) === undefined
  }

  /** The error a borrow gets while no host can be tried: REPLICA_LAG when hosts lag, else UNAVAILABLE. */
  unavailable (): Error {
    if (this.#single && this.#first.state === 'up') return this.#first.breaker.unavailable()
    const { decorator } = this.#options.identity
    const lagging = this.#hosts.filter((host) => host.state === 'lagging')
    const noneUp = this.#hosts.every((host) => host.state !== 'up')
    if (noneUp && lagging.length > 0 && this.#options.maxReplicaLagSeconds !== undefined) {
      return new FST_FORK_SAFE_DB_REPLICA_LAG(decorator, this.#options.maxReplicaLagSeconds, lagging.map(describeLag).join(', '))
    }
    const cause = this.#lastFailed?.lastError
    const code = codeOf(cause)
    const states = this.#hosts.map((host) => `${host.label} ${host.state}`).join(', ')
    return new FST_FORK_SAFE_DB_UNAVAILABLE(decorator, ` (${code === undefined ? '' : `${code}; `}no host in rotation: ${states})`, { cause })
  }

  /** The label of the host `connection` is connected to. */
  labelOf (connection: DriverConnection): string {
    return this.#single ? this.#first.label : this.#hosts[hostIndexOf(connection)]?.label ?? this.#first.label
  }

  /**
   * Opens a pool connection with `openOn(index)`: on the host the policy picks among those in
   * rotation, its role checked; a failed connect or a wrong role takes that host out and the next
   * one is tried within the same call, so one borrow fails over without waiting.
   */
  open (openOn: (index: number) => Promise<DriverConnection>): Promise<DriverConnection> {
    if (this.#single && this.#first.state === 'up') {
      return this.#first.breaker.attempt(() => openOn(0)).then((connection) => {
        if (this.#first.state === 'up') return connection
        connection.destroy()
        return this.#failOver(openOn)
      })
    }
    return this.#failOver(openOn)
  }

  /** Opens a connection on host `index` through its breaker (a KILL goes to its statement's host). */
  attemptOn (index: number, connect: () => Promise<DriverConnection>): Promise<DriverConnection> {
    return (this.#hosts[index] ?? this.#first).breaker.attempt(connect)
  }

  /** Out of rotation for new connections, in `state`; its pooled connections are retired. */
  takeOut (index: number, state: Exclude<HostState, 'up'>): void {
    const host = this.#hosts[index]
    if (host === undefined || this.#stopped) return
    const wasUp = host.state === 'up'
    host.state = state
    host.retryAt = performance.now() + Math.min(MAX_PROBE_MILLIS, FIRST_PROBE_MILLIS * 2 ** host.outages)
    host.outages += 1
    if (wasUp) this.#options.log.warn({ host: host.label, state }, `host ${host.label} is ${state}: out of rotation for new connections`)
    this.#options.retirer.retire((connection) => hostIndexOf(connection) === index, state)
    this.#schedule(host)
    if (wasUp && this.#hosts.every((other) => other.state !== 'up')) this.#retryOthersNow(host)
  }

  /**
   * The last host in rotation just left: the others' back-offs were earned while it served, but
   * the role may have moved to one of them (a switchover promotes the replica set aside as
   * read-only), so each is due at once, its back-off restarted, instead of up to 2 s later.
   */
  #retryOthersNow (left: Host): void {
    const now = performance.now()
    for (const other of this.#hosts) {
      if (other === left || other.state === 'lagging') continue
      other.outages = 0
      other.retryAt = now
      clearTimeout(other.timer)
      other.timer = undefined
      this.#schedule(other)
    }
  }

  /** The lag guard read host `index`'s lag (Infinity: not replicating). */
  noteLag (index: number, lagSeconds: number): void {
    const host = this.#hosts[index]
    if (host !== undefined) host.lagSeconds = lagSeconds
  }

  /** Back in rotation; with `sequential`, the connections to hosts after it are retired (failback). */
  putBack (index: number): void {
    const host = this.#hosts[index]
    if (host === undefined || host.state === 'up' || this.#stopped) return
    host.state = 'up'
    host.outages = 0
    host.retryAt = 0
    clearTimeout(host.timer)
    host.timer = undefined
    this.#options.log.info({ host: host.label }, `host ${host.label} is back in rotation`)
    if (this.#options.policy === 'sequential' && this.#hosts.findIndex((other) => other.state === 'up') === index) {
      this.#options.retirer.retire((connection) => hostIndexOf(connection) > index, 'failback')
    }
  }

  /** A statement on `connection` got `verdict`: a `primary` registration drops a read-only host; any drops a not-ready one. */
  refused (connection: DriverConnection, verdict: Exclude<RoleVerdict, 'ok'>): void {
    if (this.#takesOut(verdict)) this.takeOut(hostIndexOf(connection), verdict)
  }

  /** A timed-out statement's KILL could not reach its host: with several hosts, that host is down. */
  unreachable (connection: DriverConnection, error: unknown): void {
    if (this.#hosts.length === 1) return
    const host = this.#hosts[hostIndexOf(connection)]
    if (host === undefined) return
    host.failures += 1
    host.lastError = error
    this.#lastFailed = host
    this.takeOut(host.index, 'down')
  }

  /** Per host: label, state, connections open now and lent now (of `open` and `lent`), connect failures. */
  stats (open: readonly DriverConnection[], lent: readonly DriverConnection[]): HostStats[] {
    const rows = this.#hosts.map((host): HostStats => ({
      host: host.label,
      state: this.#single && host.state === 'up' && host.breaker.failing ? 'down' : host.state,
      connections: 0,
      failures: this.#single ? host.breaker.connectFailures : host.failures,
      inUse: 0
    }))
    for (const connection of open) (rows[hostIndexOf(connection)] ?? rows[0]).connections += 1
    for (const connection of lent) (rows[hostIndexOf(connection)] ?? rows[0]).inUse += 1
    return rows
  }

  /** The pool is closing or abandoned: no probe, no timer, no log line from now on (a probe that lands is closed). */
  stop (): void {
    this.#stopped = true
    for (const host of this.#hosts) {
      clearTimeout(host.timer)
      host.timer = undefined
      host.breaker.stop()
    }
  }

  /** The pool is destroyed: a probe still connecting (to a frozen host, for connectTimeout) is closed now. */
  closeProbes (): void {
    // discard(), not destroy(): mysql2's destroy() only ends the stream, which does not free a
    // socket still connecting to a frozen host.
    const closed = new Error('the pool was closed')
    for (const connection of this.probing) discard(connection, closed)
    this.probing.clear()
  }

  async #failOver (openOn: (index: number) => Promise<DriverConnection>): Promise<DriverConnection> {
    const tried = new Set<number>()
    let failure: unknown
    for (let host = this.#choose(tried); host !== undefined; host = this.#choose(tried)) {
      tried.add(host.index)
      const probe = host.state !== 'up'
      if (probe) host.probing = true
      try {
        const connection = await this.#openChecked(host, () => openOn(host.index))
        if (connection !== undefined) {
          if (probe) this.putBack(host.index)
          // Taken out while it connected (the lag guard, a refused statement): not lent.
          if (probe || host.state === 'up') return connection
          connection.destroy()
          failure = undefined
          continue
        }
        failure = this.#refusal(host)
      } catch (error) {
        failure = error
      } finally {
        if (probe) host.probing = false
      }
    }
    throw failure ?? this.unavailable()
  }

  /** A connection on `host` whose role fits; undefined when it does not (the host is then out). Throws when it cannot connect. */
  async #openChecked (host: Host, open: () => Promise<DriverConnection>): Promise<DriverConnection | undefined> {
    let connection: DriverConnection
    try {
      connection = await host.breaker.attempt(open)
    } catch (error) {
      this.#failed(host, error)
      throw error
    }
    if (!this.#checksRole(host)) return connection
    let verdict: RoleVerdict
    try {
      verdict = await checkRoleWithin(connection, this.#options.role, this.#options.checkTimeoutMillis)
    } catch (error) {
      this.probing.delete(connection)
      connection.destroy()
      this.#failed(host, error)
      throw classifyConnectError(error, this.#options.identity.decorator)
    }
    if (verdict === 'ok' || !this.#takesOut(verdict)) return connection
    this.probing.delete(connection)
    connection.destroy()
    this.takeOut(host.index, verdict)
    return undefined
  }

  #failed (host: Host, error: unknown): void {
    host.failures += 1
    host.lastError = error
    this.#lastFailed = host
    this.takeOut(host.index, 'down')
  }

  #refusal (host: Host): Error {
    const { decorator } = this.#options.identity
    return host.state === 'read-only'
      ? new FST_FORK_SAFE_DB_READ_ONLY(host.label, decorator, '@@read_only')
      : new FST_FORK_SAFE_DB_NODE_NOT_READY(host.label, decorator, 'wsrep_local_state')
  }

  #takesOut (verdict: Exclude<RoleVerdict, 'ok'>): boolean {
    return verdict === 'not-ready' || this.#options.role === 'primary'
  }

  #checksRole (host: Host): boolean {
    return this.#options.role === 'primary' || this.#hosts.length > 1 || host.state === 'read-only' || host.state === 'not-ready'
  }

  /** The next host to try: one in rotation by policy; when none is, one due for a request's probe. */
  #choose (tried: ReadonlySet<number>): Host | undefined {
    const inRotation = this.#hosts.filter((host) => host.state === 'up' && !tried.has(host.index))
    if (inRotation.length > 0) return this.#pick(inRotation)
    if (this.#hosts.some((host) => host.state === 'up')) return undefined
    return this.#dueForRequest(tried)
  }

  /** With no host in rotation, a request's connect probes a host whose back-off has passed. */
  #dueForRequest (tried: ReadonlySet<number>): Host | undefined {
    const now = performance.now()
    const due = this.#hosts.filter((host) => host.state !== 'lagging' && !host.probing && !tried.has(host.index) && host.retryAt <= now)
    return due.length === 0 ? undefined : this.#pick(due)
  }

  #pick (hosts: readonly Host[]): Host {
    return this.#options.policy === 'random' ? hosts[Math.floor(Math.random() * hosts.length)] : hosts[0]
  }

  #schedule (host: Host): void {
    if (this.#stopped || host.timer !== undefined || host.state === 'up' || host.state === 'lagging') return
    host.timer = setTimeout(() => {
      host.timer = undefined
      this.#probe(host).catch(() => {})
    }, Math.max(0, host.retryAt - performance.now()))
    host.timer.unref()
  }

  /** Opens a connection to an out-of-rotation host, checks its role and closes it: success puts it back. */
  async #probe (host: Host): Promise<void> {
    if (this.#stopped || host.state === 'up' || host.state === 'lagging') return
    if (host.probing || host.breaker.isOpen()) {
      host.retryAt = performance.now() + FIRST_PROBE_MILLIS
      this.#schedule(host)
      return
    }
    host.probing = true
    let back = false
    try {
      const connection = await this.#openChecked(host, () => this.#options.openProbe(host.index))
      if (connection !== undefined) {
        back = true
        // Tracked until its COM_QUIT is answered: a close in the meantime still reaches it.
        connection.end(() => { this.probing.delete(connection) })
      }
    } catch {
      // #openChecked took the host out again, with a longer back-off, and scheduled the next probe.
    } finally {
      host.probing = false
    }
    if (back && !this.#stopped) this.putBack(host.index)
    else this.#schedule(host)
  }
}

function describeLag (host: Host): string {
  const lag = host.lagSeconds
  return `${host.label}: ${lag === undefined ? 'lagging' : Number.isFinite(lag) ? `${lag} s` : 'not replicating'}`
}
