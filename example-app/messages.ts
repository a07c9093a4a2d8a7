// The IPC protocol between the cluster primary and its workers.

/** Worker -> primary: this worker has served MAX_REQUESTS responses and wants a replacement. */
export type WorkerMessage = { type: 'recycle' }

/** Primary -> worker: stop accepting, finish in-flight requests, close the pool and exit. */
export type PrimaryMessage = { type: 'retire' }
