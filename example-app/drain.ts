import { Server as NetServer, type Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'

// Retiring a worker without failing a request. Node's http `server.close()` destroys idle
// keep-alive sockets at once, which races with a client sending its next request on one of
// them (the client sees ECONNRESET). Instead:
// 1. stop accepting: the net-level close tells the cluster primary to route new connections
//    to other workers, and leaves open sockets alone;
// 2. answer every further request with `Connection: close`, so active clients hang up after
//    their next response;
// 3. wait until every socket has closed, or until the grace period ends;
// 4. close Fastify: in-flight requests finish, then the pool is destroyed (plugin's onClose).

const DEFAULT_GRACE_MILLIS = 3000

/** Call before `listen()`: tracks sockets and marks responses once draining starts. */
export function prepareDrain (app: FastifyInstance, graceMillis = DEFAULT_GRACE_MILLIS): () => Promise<void> {
  const sockets = new Set<Socket>()
  let draining: Promise<void> | undefined

  app.server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  app.addHook('onSend', async (_request, reply) => {
    if (draining !== undefined) reply.header('connection', 'close')
  })

  async function drain (): Promise<void> {
    if (app.server.listening) NetServer.prototype.close.call(app.server)
    await socketsClosed(sockets, graceMillis)
    await app.close()
  }
  return () => {
    draining ??= drain()
    return draining
  }
}

function socketsClosed (sockets: Set<Socket>, graceMillis: number): Promise<void> {
  if (sockets.size === 0) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(finish, graceMillis)
    const onClose = () => { if (sockets.size === 0) finish() }
    for (const socket of sockets) socket.once('close', onClose)
    function finish () {
      clearTimeout(timer)
      for (const socket of sockets) socket.off('close', onClose)
      resolve()
    }
  })
}
