import type { FastifyBaseLogger } from 'fastify'
import { createConnection } from 'mysql2'
import type { DriverConnection } from '../lib/driver/types'
import { FST_FORK_SAFE_DB_REPLICA_LAG } from '../lib/errors'
import { HostSet } from '../lib/hosts/host-set'
import type { HostRole } from '../lib/hosts/host'
import { adminUrl } from './helpers/database'

// A host can leave the rotation while a pool connect to it is in flight (the lag guard takes a
// lagging replica out, a statement is refused): retiring the pool's connections cannot reach the
// one still connecting, so the host set checks the host again once the connect lands. Here the
// connect itself takes its host out, on the shared server, which makes the race certain.

interface Logged { level: string, message: string }

function recordingLog (): { log: FastifyBaseLogger, lines: Logged[] } {
  const lines: Logged[] = []
  const at = (level: string) => (_fields: unknown, message?: string) => { lines.push({ level, message: message ?? '' }) }
  const log = { info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug'), trace: at('trace'), fatal: at('fatal'), level: 'info', silent: () => {}, child: () => log }
  return { log: log as unknown as FastifyBaseLogger, lines }
}

function hostSet (hostCount: number, role: HostRole, log: FastifyBaseLogger): HostSet {
  return new HostSet({
    identity: { decorator: 'db', pid: process.pid },
    log,
    hosts: Array.from({ length: hostCount }, (_, index) => ({ label: `host-${index}` })),
    policy: 'sequential',
    role,
    maxReplicaLagSeconds: 5,
    retirer: { retire: () => 0 },
    openProbe: async () => { throw new Error('no probe in this test') },
    checkTimeoutMillis: 2000
  })
}

const opened: DriverConnection[] = []
const destroyed = new Set<DriverConnection>()

async function connect (): Promise<DriverConnection> {
  const connection = createConnection(adminUrl()) as unknown as DriverConnection
  opened.push(connection)
  const destroy = connection.destroy.bind(connection)
  connection.destroy = () => { destroyed.add(connection); destroy() }
  await new Promise<void>((resolve, reject) => connection.connect((error) => { if (error === null) resolve(); else reject(error) }))
  return connection
}

afterEach(() => {
  for (const connection of opened) if (!destroyed.has(connection)) connection.destroy()
  opened.length = 0
  destroyed.clear()
})

test('a connection that lands on a host taken out as lagging while it connected is closed, and the next host serves', async () => {
  const { log } = recordingLog()
  const hosts = hostSet(2, 'any', log)
  const tried: number[] = []
  try {
    const connection = await hosts.open(async (index) => {
      tried.push(index)
      const landed = await connect()
      if (index === 0) hosts.takeOut(0, 'lagging')
      return landed
    })
    expect(tried).toEqual([0, 1])
    expect(connection).toBe(opened[1])
    expect(destroyed.has(opened[0])).toBe(true)
    expect(destroyed.has(connection)).toBe(false)
  } finally {
    hosts.stop()
  }
})

test('with one host, a connection that lands after the host was taken out as lagging is closed and the borrow gets FST_FORK_SAFE_DB_REPLICA_LAG', async () => {
  const { log } = recordingLog()
  const hosts = hostSet(1, 'any', log)
  try {
    await expect(hosts.open(async () => {
      const landed = await connect()
      hosts.takeOut(0, 'lagging')
      return landed
    })).rejects.toBeInstanceOf(FST_FORK_SAFE_DB_REPLICA_LAG)
    expect(opened).toHaveLength(1)
    expect(destroyed.has(opened[0])).toBe(true)
  } finally {
    hosts.stop()
  }
})

test('once stopped, taking a host out or putting it back logs nothing', () => {
  const { log, lines } = recordingLog()
  const hosts = hostSet(2, 'any', log)
  hosts.stop()
  hosts.takeOut(0, 'down')
  hosts.putBack(0)
  expect(lines).toEqual([])
  expect(hosts.hosts[0].state).toBe('up')
})
