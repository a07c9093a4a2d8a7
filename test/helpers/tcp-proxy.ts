import { createServer, connect, type Server, type Socket } from 'node:net'

// A loopback TCP proxy between an app and its database, for benchmarks and fault tests:
// `delayMillis` holds every chunk back in each direction (a database in another zone), and
// `refuse` drops new connections at once (a database that is down).

export interface ProxyOptions {
  target: { host: string, port: number }
  delayMillis?: number
}

export class TcpProxy {
  delayMillis: number
  refuse = false
  /** Connections accepted (including refused ones), for counting handshakes. */
  accepted = 0
  readonly #server: Server
  readonly #sockets = new Set<Socket>()
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

  /** `url` with its host and port replaced by the proxy's. */
  urlFor (url: string): string {
    const parsed = new URL(url)
    parsed.hostname = '127.0.0.1'
    parsed.port = String(this.port)
    return parsed.toString()
  }

  #accept (client: Socket): void {
    this.accepted += 1
    if (this.refuse) {
      client.destroy()
      return
    }
    const upstream = connect(this.#target.port, this.#target.host)
    for (const socket of [client, upstream]) {
      this.#sockets.add(socket)
      socket.setNoDelay(true)
      socket.once('close', () => this.#sockets.delete(socket))
    }
    this.#pipe(client, upstream)
    this.#pipe(upstream, client)
  }

  // Each chunk is written `delayMillis` after it arrived; equal timeouts fire in order, so the
  // byte stream stays intact. Ends and errors travel after the data they follow.
  #pipe (from: Socket, to: Socket): void {
    const later = (action: () => void) => {
      if (this.delayMillis === 0) action()
      else setTimeout(action, this.delayMillis)
    }
    from.on('data', (chunk) => later(() => { if (!to.destroyed) to.write(chunk) }))
    from.on('end', () => later(() => to.end()))
    from.on('error', () => later(() => to.destroy()))
    from.on('close', () => later(() => to.destroy()))
  }

  async close (): Promise<void> {
    for (const socket of this.#sockets) socket.destroy()
    await new Promise<void>((resolve) => this.#server.close(() => resolve()))
  }
}
