import type { FastifyInstance } from 'fastify'
import { clusterWord, inForkSafeCluster, tellPrimary } from '../cluster/protocol'

// A worker of fastify-fork-safe-db/cluster's primary tells it "listening" once the app listens:
// onReady has run by then (the pool warm, the request path warmed), so the primary may retire
// the worker this one replaces. And it retires when the primary asks. A retire asked for before
// the app listens (a stop while it starts) waits for listen(), since the primary asks again at
// "listening" in case this process was not yet listening for messages. Under any other primary
// (pm2's, a user's own) nothing is sent or listened for.

/** Links the worker to its primary; returns the function that removes the message listener. */
export function linkToPrimary (fastify: FastifyInstance, retire: () => void): () => void {
  if (!inForkSafeCluster()) return () => {}
  let listening = false
  let asked = false
  fastify.addHook('onListen', async () => {
    listening = true
    tellPrimary('listening')
    if (asked) retire()
  })
  const onMessage = (message: unknown) => {
    if (clusterWord(message) !== 'retire') return
    asked = true
    if (listening) retire()
  }
  process.on('message', onMessage)
  return () => { process.off('message', onMessage) }
}
