import { readdir, readFile, readlink } from 'node:fs/promises'

// Which process holds the server side of a TCP connection: the kernel's socket table
// (/proc/net/tcp*) joined with the process's file descriptors (/proc/<pid>/fd). Linux only.
// With round-robin scheduling the cluster primary accepts every connection and holds it until
// a worker has acknowledged it: once the load has stopped it must hold none.

const LISTEN = '0A'
const STATE_NAMES: Record<string, string> = { '01': 'ESTABLISHED', '08': 'CLOSE_WAIT', '06': 'TIME_WAIT', '07': 'CLOSE', '09': 'LAST_ACK', '04': 'FIN_WAIT1', '05': 'FIN_WAIT2' }

export interface HeldSocket { localPort: number, remotePort: number, state: string }

async function socketInodes (pid: number): Promise<Set<string>> {
  const inodes = new Set<string>()
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    // An fd can close between readdir and readlink.
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')
    const match = /^socket:\[(\d+)\]$/.exec(target)
    if (match !== null) inodes.add(match[1])
  }
  return inodes
}

/** True when `pid` holds a listening socket on `port`: under SCHED_NONE every worker does, under round-robin only the primary. */
export async function holdsListener (pid: number, port: number): Promise<boolean> {
  const inodes = await socketInodes(pid)
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '')
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/)
      if (fields.length < 10 || fields[3] !== LISTEN) continue
      if (parseInt(fields[1].split(':')[1], 16) === port && inodes.has(fields[9])) return true
    }
  }
  return false
}

/** Connections (not listeners) on local `port` whose socket `pid` holds open. */
export async function heldConnections (pid: number, port: number): Promise<HeldSocket[]> {
  const inodes = await socketInodes(pid)
  const held: HeldSocket[] = []
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '')
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/)
      if (fields.length < 10) continue
      const [, local, remote, state] = fields
      const localPort = parseInt(local.split(':')[1], 16)
      if (localPort !== port || state === LISTEN || !inodes.has(fields[9])) continue
      held.push({ localPort, remotePort: parseInt(remote.split(':')[1], 16), state: STATE_NAMES[state] ?? state })
    }
  }
  return held
}
