import type { Server as HttpServer } from 'node:http'
import type { Socket } from 'node:net'

// The connections of a server that has stopped accepting: clients on kept-alive sockets are
// told `Connection: close` with their next response (see worker plugin) and hang up; a client
// that keeps an idle socket and never sends again would hold the worker for ever, so after
// `drainMillis` idle sockets are closed, and after `closeMillis` every socket is destroyed.

export class SocketTracker {
  readonly #sockets = new Set<Socket>()

  constructor (server: HttpServer) {
    server.on('connection', (socket: Socket) => this.add(socket))
  }

  add (socket: Socket): void {
    this.#sockets.add(socket)
    socket.once('close', () => this.#sockets.delete(socket))
  }

  get size (): number {
    return this.#sockets.size
  }

  /** Resolves true once every socket has closed, false if `millis` passed first. */
  closed (millis: number): Promise<boolean> {
    if (this.#sockets.size === 0) return Promise.resolve(true)
    return new Promise((resolve) => {
      const onClose = () => { if (this.#sockets.size === 0) finish(true) }
      const timer = setTimeout(() => finish(false), millis)
      const finish = (allClosed: boolean) => {
        clearTimeout(timer)
        for (const socket of this.#sockets) socket.off('close', onClose)
        resolve(allClosed)
      }
      for (const socket of this.#sockets) socket.once('close', onClose)
    })
  }

  /** Destroys every socket still open; returns how many there were. */
  destroyAll (): number {
    const count = this.#sockets.size
    for (const socket of this.#sockets) socket.destroy()
    return count
  }
}
