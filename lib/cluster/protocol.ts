import cluster from 'node:cluster'

// The IPC protocol between the primary of `fastify-fork-safe-db/cluster` and its workers. Every
// message is an object under one namespaced key, so it cannot be mistaken for an app's own
// messages (or pm2's 'ready'), and a worker speaks it only to a primary that set WORKER_ENV:
// under pm2 or a primary of the user's own, nothing is sent.

export const MESSAGE_KEY = 'fastify-fork-safe-db/cluster'
/** Set to '1' in every worker's environment by the primary. */
export const WORKER_ENV = 'FASTIFY_FORK_SAFE_DB_CLUSTER'

/**
 * Worker -> primary: `listening` once the app listens (the pool and the request path were warmed
 * in onReady, before listen() bound), `recycle` to ask for a replacement.
 * Primary -> worker: `retire`.
 */
export type ClusterWord = 'listening' | 'recycle' | 'retire'

export function clusterMessage (word: ClusterWord): Record<typeof MESSAGE_KEY, ClusterWord> {
  return { [MESSAGE_KEY]: word }
}

/** The word of a protocol message; undefined for any other message. */
export function clusterWord (message: unknown): ClusterWord | undefined {
  if (typeof message !== 'object' || message === null) return undefined
  const word = (message as Record<string, unknown>)[MESSAGE_KEY]
  return word === 'listening' || word === 'recycle' || word === 'retire' ? word : undefined
}

/** True in a worker forked by `startCluster()`. */
export function inForkSafeCluster (): boolean {
  return cluster.isWorker && process.env[WORKER_ENV] === '1'
}

/** Sends `word` to the primary if this is one of its workers and the channel is open; says whether it did. */
export function tellPrimary (word: ClusterWord): boolean {
  if (!inForkSafeCluster() || !process.connected || process.send === undefined) return false
  // With a callback a failed send (the channel closing meanwhile) is reported to it, not thrown.
  process.send(clusterMessage(word), undefined, undefined, () => {})
  return true
}
