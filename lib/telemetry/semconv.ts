// The names, units and attributes of OpenTelemetry's database semantic conventions (v1.44,
// model/db/metrics.yaml): the stable `db.client.operation.duration` and the pool metrics (still
// in development there). In one place, so a rename in a later version is one edit.

/** The meter's (instrumentation scope's) name. */
export const METER_NAME = 'fastify-fork-safe-db'

/**
 * The conventions advise these boundaries for `db.client.operation.duration`. The pool's
 * histograms (create, wait, use time) get them too: the SDK's default boundaries (0 … 10,000)
 * are meant for milliseconds and would put every second-valued sample in the first bucket or two.
 */
export const DURATION_BUCKETS_SECONDS: readonly number[] = Object.freeze([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10])

export const ATTRIBUTE = Object.freeze({
  poolName: 'db.client.connection.pool.name',
  state: 'db.client.connection.state',
  system: 'db.system.name',
  namespace: 'db.namespace',
  address: 'server.address',
  port: 'server.port',
  operation: 'db.operation.name',
  errorType: 'error.type',
  statusCode: 'db.response.status_code'
} as const)

/** `error.type` of a failure whose error has no code of its own (the conventions' fallback). */
export const OTHER_ERROR = '_OTHER'

export interface InstrumentSpec {
  readonly name: string
  readonly unit: string
  readonly description: string
}

export const OPERATION_DURATION: InstrumentSpec = { name: 'db.client.operation.duration', unit: 's', description: 'Duration of database client operations.' }
export const CONNECTION_COUNT: InstrumentSpec = { name: 'db.client.connection.count', unit: '{connection}', description: 'The number of connections that are currently in state described by the state attribute.' }
export const CONNECTION_IDLE_MAX: InstrumentSpec = { name: 'db.client.connection.idle.max', unit: '{connection}', description: 'The maximum number of idle open connections allowed.' }
export const CONNECTION_IDLE_MIN: InstrumentSpec = { name: 'db.client.connection.idle.min', unit: '{connection}', description: 'The minimum number of idle open connections allowed.' }
export const CONNECTION_MAX: InstrumentSpec = { name: 'db.client.connection.max', unit: '{connection}', description: 'The maximum number of open connections allowed.' }
export const CONNECTION_PENDING_REQUESTS: InstrumentSpec = { name: 'db.client.connection.pending_requests', unit: '{request}', description: 'The number of current pending requests for an open connection.' }
export const CONNECTION_TIMEOUTS: InstrumentSpec = { name: 'db.client.connection.timeouts', unit: '{timeout}', description: 'The number of connection timeouts that have occurred trying to obtain a connection from the pool.' }
export const CONNECTION_CREATE_TIME: InstrumentSpec = { name: 'db.client.connection.create_time', unit: 's', description: 'The time it took to create a new connection.' }
export const CONNECTION_WAIT_TIME: InstrumentSpec = { name: 'db.client.connection.wait_time', unit: 's', description: 'The time it took to obtain an open connection from the pool.' }
export const CONNECTION_USE_TIME: InstrumentSpec = { name: 'db.client.connection.use_time', unit: 's', description: 'The time between borrowing a connection and returning it to the pool.' }
