import { Server as NetServer } from 'node:net'
import type { Server as HttpServer } from 'node:http'

// Stop accepting without touching open connections. Node's http `Server#close()` (since 19)
// also closes idle keep-alive sockets at once, which races with a client that is sending its
// next request on one (it sees ECONNRESET for a request it already sent). The net-level close
// only closes the listening handle: in a cluster worker that sends the primary `close` for
// this server, after which the primary hands the worker no new connection.

export function stopAccepting (server: HttpServer): void {
  if (server.listening) NetServer.prototype.close.call(server)
}
