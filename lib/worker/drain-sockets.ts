import type { Server as HttpServer } from 'node:http'
import type { Socket } from 'node:net'

// The connections of a server that has stopped accepting: clients on kept-alive sockets are
// told `Connection: close` with their next response (see worker plugin) and hang up; a client
// that keeps an idle socket and never sends again would hold the worker for ever, so after
// `drainMillis` idle sockets are closed, and after `closeMillis` every socket is destroyed.
//
// "Idle" has two kinds, and Node's `closeIdleConnections()` knows only one. A kept-alive socket
// between two requests is idle to it. A socket on which the client has sent nothing yet is not:
// Node counts it as a request whose headers are on their way (its parser starts the headers
// clock at accept, for `headersTimeout`), so it is left open, `server.close()` waits for it, and
// the retire waited out closeMillis for a connection that carried no request. Such connections
// are common: a client that connects ahead of its request (a browser's preconnect, a proxy's or
// load balancer's pool), or one accepted just as the worker stopped. Those whose request arrives
// during the drain are served (with `Connection: close`); the ones still silent after it carry
// nothing to lose and are closed with the idle ones.

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

  /** Closes the sockets on which the client has sent nothing at all; returns how many there were. */
  closeUnused (): number {
    let count = 0
    for (const socket of this.#sockets) {
      if (socket.bytesRead === 0) {
        socket.destroy()
        count += 1
      }
    }
    return count
  }

  /** Destroys every socket still open; returns how many there were. */
  destroyAll (): number {
    const count = this.#sockets.size
    for (const socket of this.#sockets) socket.destroy()
    return count
  }
}
