import cluster from 'node:cluster'
import type { FastifyBaseLogger } from 'fastify'

// A pool belongs in the process that serves requests. One built in a cluster primary that has
// forked workers is at best wasted connections (workers x pool.min plus the primary's), and at
// worst the "opened before fork" bug in another shape. The primary is told once, whether the
// workers were forked before the pool was built or after.

/** Watches for workers of this primary; returns a function that stops watching. */
export function warnIfBuiltInPrimary (log: FastifyBaseLogger): () => void {
  if (!cluster.isPrimary) return () => {}
  const warn = () => {
    cluster.off('fork', warn)
    log.warn(
      { workers: Object.keys(cluster.workers ?? {}).length },
      'a connection pool was built in a cluster primary that has forked workers: build it in the workers (register the plugin there) and let the primary hold none'
    )
  }
  if (Object.keys(cluster.workers ?? {}).length > 0) {
    warn()
    return () => {}
  }
  cluster.on('fork', warn)
  return () => cluster.off('fork', warn)
}
