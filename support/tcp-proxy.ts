import { createServer, connect, type Server, type Socket } from 'node:net'

// A loopback TCP proxy between an app and its database, for benchmarks and fault tests:
// - `delayMillis` holds every chunk back in each direction (a database in another zone);
// - `refuse` drops new connections at once (a database that is down);
// - `blackhole` accepts new connections and forwards nothing either way (a peer that vanished);
// - `cutAfterBytes` ends a connection once that many bytes went from server to client;
// - `finAll()` / `resetAll()` end every open connection politely or with a reset;
// - `delayNewMillis` delays only connections accepted from now on (a slow KILL connection while
//   the pool's own connections stay fast);
// - `refuseWhen(n)` refuses the n-th connection (1-based) when it returns true;
// - `resetOnQuery` resets a connection whose client sends a statement matching it;
// - `swallowQuery` never forwards a matching statement and leaves the connection open: its client
//   waits for an answer that never comes (a server frozen as the statement arrived);
// - `loseReplyToQuery` forwards a matching statement, then drops the server's reply to it and
//   resets both sides: the server ran it (a COMMIT committed), the client never hears so;
// - `misorderOnQuery` shifts the sequence id of the first reply to a matching statement, which
//   the driver reports as "packets out of order".

/** One connection's pending faults, set by the client's statement and spent on the server's reply. */
interface Faults {
  misorderNextReply: boolean
  loseNextReply: boolean
}

export interface ProxyOptions {
  target: { host: string, port: number }
  delayMillis?: number
}

export class TcpProxy {
  delayMillis: number
  refuse = false
  blackhole = false
  /** With `cutAfterBytes`: 'fin' ends the client side politely, 'rst' resets it. */
  cut: { afterBytes: number, how: 'fin' | 'rst' } | undefined
  /** When set, connections accepted from now on are delayed by this much (existing ones keep `delayMillis`). */
  delayNewMillis: number | undefined
  /** Refuses the n-th accepted connection (1-based) when it returns true. */
  refuseWhen: ((n: number) => boolean) | undefined
  /** A connection whose client sends a statement matching this is reset (both sides). */
  resetOnQuery: RegExp | undefined
  /** The first reply to a statement matching this arrives with a shifted sequence id. */
  misorderOnQuery: RegExp | undefined
  /** A statement matching this is dropped, the connection left open: no answer ever comes. */
  swallowQuery: RegExp | undefined
  /**
   * A statement matching this reaches the server; its reply is dropped and the connection reset
   * (both sides) as the reply arrives: the statement ran, and its answer was lost.
   */
  loseReplyToQuery: RegExp | undefined
  /** Sees every chunk a client sends, as it arrives (to wait for a given command). */
  onClientData: ((chunk: Buffer) => void) | undefined
  /** Connections accepted (including refused ones), for counting handshakes. */
  accepted = 0
  /** Client connections that have closed. */
  closed = 0
  /** When each connection was accepted (performance.now()), for counting connects that arrive together. */
  readonly acceptedAt: number[] = []
  /**
   * Delayed writes that went out more than 1 ms after they were due (performance.now() when they
   * went, and by how much): this process's own event loop fell behind, so a benchmark can tell
   * a slow response caused by its harness from one caused by the app.
   */
  readonly lateWrites: Array<{ at: number, lateMillis: number }> = []
  readonly #clients = new Set<Socket>()
  readonly #server: Server
  readonly #sockets = new Set<Socket>()
  /** Delayed writes still pending: cleared on close, so a long delay outlives no test. */
  readonly #timers = new Set<NodeJS.Timeout>()
  #closed = false
  readonly #target: { host: string, port: number }

  private constructor (server: Server, options: ProxyOptions) {
    this.#server = server
    this.#target = options.target
    this.delayMillis = options.delayMillis ?? 0
  }

  static async start (options: ProxyOptions): Promise<TcpProxy> {
    const server = createServer()
    const proxy = new TcpProxy(server, options)
    server.on('connection', (client) => proxy.#accept(client))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    return proxy
  }

  get port (): number {
    const address = this.#server.address()
    if (address === null || typeof address === 'string') throw new Error('proxy is not listening')
    return address.port
  }

  /** Client connections currently open through the proxy. */
  get openConnections (): number {
    return this.#clients.size
  }

  /** `url` with its host and port replaced by the proxy's. */
  urlFor (url: string): string {
    const parsed = new URL(url)
    parsed.hostname = '127.0.0.1'
    parsed.port = String(this.port)
    return parsed.toString()
  }

  /** The most connections accepted within any `windowMillis`: simultaneous handshakes, when a handshake takes longer. */
  peakAcceptedWithin (windowMillis: number): number {
    const times = [...this.acceptedAt].sort((a, b) => a - b)
    let peak = 0
    for (let first = 0, last = 0; last < times.length; last++) {
      while (times[last] - times[first] >= windowMillis) first++
      peak = Math.max(peak, last - first + 1)
    }
    return peak
  }

  #accept (client: Socket): void {
    this.accepted += 1
    this.acceptedAt.push(performance.now())
    if (this.refuse || this.refuseWhen?.(this.accepted) === true) {
      client.destroy()
      return
    }
    this.#track(client)
    this.#clients.add(client)
    client.once('close', () => {
      this.#clients.delete(client)
      this.closed += 1
    })
    if (this.blackhole) {
      client.on('data', () => {})
      client.on('error', () => {})
      return
    }
    const upstream = connect(this.#target.port, this.#target.host)
    this.#track(upstream)
    const fixedDelay = this.delayNewMillis
    const delayOf = fixedDelay === undefined ? () => this.delayMillis : () => fixedDelay
    // Set when the client sent a statement matching `misorderOnQuery`: the reply gets misordered.
    const faults: Faults = { misorderNextReply: false, loseNextReply: false }
    this.#pipe(client, upstream, { delayOf, inspect: (chunk) => this.#inspectQuery(chunk, client, upstream, faults) })
    this.#pipe(upstream, client, {
      delayOf,
      cut: this.cut,
      inspect: () => this.#inspectReply(client, upstream, faults),
      rewrite: (chunk) => this.#misorder(chunk, faults)
    })
  }

  /** Drops the reply a `loseReplyToQuery` statement is waiting for, and resets both sides. */
  #inspectReply (client: Socket, upstream: Socket, faults: Faults): boolean {
    if (!faults.loseNextReply) return true
    client.resetAndDestroy()
    upstream.resetAndDestroy()
    return false
  }

  #inspectQuery (chunk: Buffer, client: Socket, upstream: Socket, faults: Faults): boolean {
    this.onClientData?.(chunk)
    if (this.resetOnQuery === undefined && this.misorderOnQuery === undefined && this.loseReplyToQuery === undefined && this.swallowQuery === undefined) return true
    const text = chunk.toString('latin1')
    if (this.swallowQuery?.test(text) === true) return false
    if (this.resetOnQuery?.test(text) === true) {
      client.resetAndDestroy()
      upstream.resetAndDestroy()
      return false
    }
    if (this.misorderOnQuery?.test(text) === true) faults.misorderNextReply = true
    if (this.loseReplyToQuery?.test(text) === true) faults.loseNextReply = true
    return true
  }

  // A MySQL packet starts with a 3-byte length and a 1-byte sequence id.
  #misorder (chunk: Buffer, faults: Faults): Buffer {
    if (!faults.misorderNextReply || chunk.length < 4) return chunk
    faults.misorderNextReply = false
    const copy = Buffer.from(chunk)
    copy[3] = (copy[3] + 7) % 256
    return copy
  }

  #track (socket: Socket): void {
    this.#sockets.add(socket)
    socket.setNoDelay(true)
    socket.once('close', () => this.#sockets.delete(socket))
  }

  /** Ends every open connection with a FIN. */
  finAll (): void {
    for (const socket of this.#sockets) socket.end()
  }

  /** Ends every open connection with a TCP reset. */
  resetAll (): void {
    for (const socket of this.#sockets) socket.resetAndDestroy()
  }

  // Each chunk is written `delayOf()` after it arrived; equal timeouts fire in order, so the
  // byte stream stays intact. Ends and errors travel after the data they follow.
  #pipe (from: Socket, to: Socket, options: {
    delayOf: () => number
    cut?: { afterBytes: number, how: 'fin' | 'rst' }
    /** Sees each chunk as it arrives; false drops it. */
    inspect?: (chunk: Buffer) => boolean
    rewrite?: (chunk: Buffer) => Buffer
  }): void {
    const { delayOf, cut, inspect, rewrite } = options
    const later = (action: () => void) => {
      const delay = delayOf()
      if (delay === 0 || this.#closed) {
        action()
        return
      }
      const due = performance.now() + delay
      const timer = setTimeout(() => {
        this.#timers.delete(timer)
        const at = performance.now()
        if (at - due > 1) this.lateWrites.push({ at, lateMillis: at - due })
        action()
      }, delay)
      this.#timers.add(timer)
    }
    let sent = 0
    from.on('data', (arrived: Buffer) => {
      if (inspect !== undefined && !inspect(arrived)) return
      const chunk = rewrite === undefined ? arrived : rewrite(arrived)
      later(() => forward(chunk))
    })
    const forward = (chunk: Buffer) => {
      if (to.destroyed) return
      if (cut === undefined) {
        to.write(chunk)
        return
      }
      const room = cut.afterBytes - sent
      if (room <= 0) return
      to.write(chunk.subarray(0, room))
      sent += Math.min(room, chunk.length)
      if (sent >= cut.afterBytes) {
        if (cut.how === 'fin') to.end()
        else to.resetAndDestroy()
        from.destroy()
      }
    }
    from.on('end', () => later(() => to.end()))
    from.on('error', () => later(() => to.destroy()))
    from.on('close', () => later(() => to.destroy()))
  }

  async close (): Promise<void> {
    this.#closed = true
    for (const timer of this.#timers) clearTimeout(timer)
    this.#timers.clear()
    for (const socket of this.#sockets) socket.destroy()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }
}
