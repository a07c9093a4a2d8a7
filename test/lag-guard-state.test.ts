import { createServer, type Server, type Socket } from 'node:net'
import type { FastifyBaseLogger } from 'fastify'
import { createConnection } from 'mysql2'
import type { DriverConnection } from '../lib/driver/types'
import type { HostState } from '../lib/hosts/host'
import { LagGuard, type LagHostSet } from '../lib/hosts/lag-guard'
import { adminUrl } from './helpers/database'

// The lag guard decides from the host set's state, not from a memory of its own: a host it took
// out as lagging may be set down meanwhile (a KILL that could not reach it) and put back up by a
// probe while it still lags; the guard takes it out again. The shared server replicates from
// nothing, so it reads as 0 s behind: a bound of -1 makes it lag, a bound of 5 catches it up.
// And close() reaches a monitor connection still opening (to a server that never answers).

const CHECK_MILLIS = 50

const log = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {}, trace: () => {}, fatal: () => {}, level: 'info', silent: () => {}, child: () => log } as unknown as FastifyBaseLogger

interface FakeHostSet extends LagHostSet {
  readonly entry: { index: number, label: string, state: HostState }
  readonly calls: string[]
  /** Resolves once `calls` has `count` entries of `kind`. */
  next: (kind: string, count: number) => Promise<void>
}

function recordingHostSet (): FakeHostSet {
  const entry = { index: 0, label: 'h0', state: 'up' as HostState }
  const calls: string[] = []
  const waiters: Array<() => void> = []
  const record = (kind: string): void => { calls.push(kind); for (const wake of waiters.splice(0)) wake() }
  const next = async (kind: string, count: number): Promise<void> => {
    while (calls.filter((call) => call === kind).length < count) await new Promise<void>((resolve) => waiters.push(resolve))
  }
  return {
    hosts: [entry],
    entry,
    calls,
    next,
    takeOut: (_index, state) => { entry.state = state; record('takeOut') },
    putBack: () => { entry.state = 'up'; record('putBack') },
    noteLag: () => { record('noteLag') }
  }
}

/** As client/connect.ts opens a monitor connection: in `opening` while it connects. */
async function open (settings: string | object, opening: Set<DriverConnection>): Promise<DriverConnection> {
  const connection = createConnection(settings as string) as unknown as DriverConnection
  connection.on('error', () => {})
  opening.add(connection)
  try {
    await new Promise<void>((resolve, reject) => connection.connect((error) => { if (error === null) resolve(); else reject(error) }))
  } finally {
    opening.delete(connection)
  }
  return connection
}

test('takes a host out again when it still lags after a probe put it back up from down', async () => {
  const hostSet = recordingHostSet()
  const options = { decorator: 'replica', maxReplicaLagSeconds: -1, replicaLagCheckMillis: CHECK_MILLIS, secrets: [] }
  const guard = new LagGuard({ options, log, hostSet, openHostConnection: async (_index, opening) => open(adminUrl(), opening) })
  guard.start()
  try {
    await hostSet.next('takeOut', 1)
    // Still lagging for a few checks: taken out once.
    const seen = hostSet.calls.filter((call) => call === 'noteLag').length
    await hostSet.next('noteLag', seen + 3)
    expect(hostSet.calls.filter((call) => call === 'takeOut')).toHaveLength(1)
    // A KILL that could not reach it sets it down; a probe puts it back up; it still lags.
    hostSet.entry.state = 'down'
    hostSet.entry.state = 'up'
    await hostSet.next('takeOut', 2)
    expect(hostSet.entry.state).toBe('lagging')
    options.maxReplicaLagSeconds = 5
    await hostSet.next('putBack', 1)
    expect(hostSet.entry.state).toBe('up')
  } finally {
    await guard.close()
  }
})

test('does not put back a host it finds down, even once it has caught up (a probe decides that)', async () => {
  const hostSet = recordingHostSet()
  hostSet.entry.state = 'down'
  const options = { decorator: 'replica', maxReplicaLagSeconds: 5, replicaLagCheckMillis: CHECK_MILLIS, secrets: [] }
  const guard = new LagGuard({ options, log, hostSet, openHostConnection: async (_index, opening) => open(adminUrl(), opening) })
  guard.start()
  try {
    await hostSet.next('noteLag', 3)
    expect(hostSet.calls.filter((call) => call !== 'noteLag')).toEqual([])
    expect(hostSet.entry.state).toBe('down')
  } finally {
    await guard.close()
  }
})

describe('a server that accepts the connection and never answers', () => {
  let server: Server
  const sockets = new Set<Socket>()
  let accepted: Promise<Socket>

  beforeEach(async () => {
    let onAccept: (socket: Socket) => void = () => {}
    accepted = new Promise((resolve) => { onAccept = resolve })
    server = createServer((socket) => { sockets.add(socket); socket.on('close', () => sockets.delete(socket)); onAccept(socket) })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  })

  afterEach(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })

  test('close() closes a monitor connection still opening, without waiting for connectTimeout', async () => {
    const { port } = server.address() as { port: number }
    const hostSet = recordingHostSet()
    const options = { decorator: 'replica', maxReplicaLagSeconds: 5, replicaLagCheckMillis: 60_000, secrets: [] }
    const settings = { host: '127.0.0.1', port, user: 'nobody', connectTimeout: 600_000 }
    const guard = new LagGuard({ options, log, hostSet, openHostConnection: async (_index, opening) => open(settings, opening) })
    guard.start()
    const socket = await accepted
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
    await guard.close()
    // The client's socket is gone: the server side sees it close (before the fix it stayed for connectTimeout).
    socket.resume()
    await closed
    expect(hostSet.calls).toEqual([])
  })
})
