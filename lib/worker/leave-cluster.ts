import cluster from 'node:cluster'

// Closing the IPC channel of a cluster worker safely.
//
// Under round-robin scheduling (Node's default except on Windows) the primary accepts every
// connection and sends its handle to a worker ('newconn'); it closes its own copy, or hands the
// connection to another worker, only when the worker's acknowledgement comes back
// (lib/internal/cluster/round_robin_handle.js, `handoff`: the callback of `sendHelper`). A
// worker that has closed its server answers `accepted: false` and the primary re-distributes
// the connection (child.js, `onconnection`). But a worker that closes its channel while a
// handoff is on its way never answers: `process.disconnect()` makes `process.connected` false
// at once, so the acknowledgement is not sent (utils.js `sendHelper` returns early), and a
// message read after the channel closed is dropped (child_process.js `handleMessage`). The
// primary then holds the connection for ever: the client hangs (nodejs/node#3551, #21746).
//
// `cluster.worker.disconnect()` closes the channel only after a round trip: it sends
// `exitedAfterDisconnect` and disconnects in the callback of the primary's answer (child.js
// `_disconnect`). The primary answers after it has handled this worker's earlier `close` for its
// server, and everything it sent before the answer (any handoff included) arrives first, on the
// same ordered channel, and has been answered. After the answer no handoff can arrive.

export type Disconnection = 'acknowledged' | 'timed-out' | 'not-a-cluster-worker' | 'not-connected'

/** Resolves once the channel to the primary is closed safely, or after `millis`. */
export function leaveCluster (millis: number): Promise<Disconnection> {
  const worker = cluster.worker
  // Outside a cluster no connection is ever handed over a channel, and one the process may have
  // (a test runner's, pm2's fork mode) is not ours to close.
  if (!cluster.isWorker || worker === undefined || worker === null) return Promise.resolve('not-a-cluster-worker')
  if (!worker.isConnected()) return Promise.resolve('not-connected')
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      worker.off('disconnect', onDisconnect)
      // The primary did not answer (it is stuck or gone): leave anyway, the bound is the point.
      if (process.connected) process.disconnect()
      resolve('timed-out')
    }, millis)
    const onDisconnect = () => {
      clearTimeout(timer)
      resolve('acknowledged')
    }
    worker.once('disconnect', onDisconnect)
    worker.disconnect()
  })
}
