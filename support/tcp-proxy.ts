import { createServer, connect, type Server, type Socket } from 'node:net'

// A loopback TCP proxy between an app and its database, for benchmarks and fault tests:
// - `delayMillis` holds every chunk back in each direction (a database in another zone);
// - `refuse` drops new connections at once (a database that is down);
// - `blackhole` accepts new connections and forwards nothing either way (a peer that vanished);
// - `cutAfterBytes` ends a connection once that many bytes went from server to client;
// - `finAll()` / `resetAll()` end every open connection politely or with a reset.

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
  /** Connections accepted (including refused ones), for counting handshakes. */
  accepted = 0
  /** Client connections that have closed. */
  closed = 0
  /** When each connection was accepted (performance.now()), for counting connects that arrive together. */
  readonly acceptedAt: number[] = []
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
    if (this.refuse) {
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
    this.#pipe(client, upstream)
    this.#pipe(upstream, client, this.cut)
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

  // Each chunk is written `delayMillis` after it arrived; equal timeouts fire in order, so the
  // byte stream stays intact. Ends and errors travel after the data they follow.
  #pipe (from: Socket, to: Socket, cut?: { afterBytes: number, how: 'fin' | 'rst' }): void {
    const later = (action: () => void) => {
      if (this.delayMillis === 0 || this.#closed) {
        action()
        return
      }
      const timer = setTimeout(() => {
        this.#timers.delete(timer)
        action()
      }, this.delayMillis)
      this.#timers.add(timer)
    }
    let sent = 0
    from.on('data', (chunk: Buffer) => later(() => {
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
    }))
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
