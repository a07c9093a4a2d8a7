// A hang-up is seen on the socket. Each socket gets one 'close' listener for its whole life
// (a kept-alive socket serves many requests), and the scope to tell is a property on it, set
// while one of its request's statements runs or a transaction is open. Per-request listeners
// (Fastify's onRequestAbort adds a 'close' listener to every request) and per-statement
// add/remove both cost throughput in bench/overhead.ts. The socket carries one property, set
// once: a small record whose one field names the scope. (The scope itself on the socket, set and
// cleared, plus a second mark, changed every new socket's shape three times per request, and
// bench:instructions found the watch left unoptimized.)

/** What the socket tells when it closes: the request scope with something open on it. */
export interface HangUpListener {
  hungUp: () => void
}

const hangUpWatch = Symbol('fastify-fork-safe-db:hang-up-watch')
export interface HangUpWatch { scope: HangUpListener | undefined }
type WatchedSocket = NodeJS.EventEmitter & { [hangUpWatch]?: HangUpWatch }

function onSocketClose (this: WatchedSocket): void {
  const watch = this[hangUpWatch]
  const scope = watch?.scope
  if (watch !== undefined) watch.scope = undefined
  scope?.hungUp()
}

/** Names `scope` as the one to tell when `socket` closes; undefined when there is no socket to watch. */
export function watchSocket (socket: unknown, scope: HangUpListener): HangUpWatch | undefined {
  const watched = socket as WatchedSocket | undefined | null
  if (watched === undefined || watched === null || typeof watched.on !== 'function') return undefined
  const watch = watched[hangUpWatch]
  if (watch === undefined) {
    const created: HangUpWatch = watched[hangUpWatch] = { scope }
    watched.on('close', onSocketClose)
    return created
  }
  watch.scope = scope
  return watch
}

/** `scope` has nothing open any more: the socket's close tells nobody (unless another scope took it). */
export function unwatchSocket (watch: HangUpWatch, scope: HangUpListener): void {
  if (watch.scope === scope) watch.scope = undefined
}
