import { Agent } from 'node:http'
import { sendOne, type LoadOptions, type Outcome } from '../../support/http-load'

// An open-loop load: one request every 1/rate seconds, whatever the answers do, until stop().
// support/http-load's clients send as fast as they are answered, which on two shared cores
// takes every cycle the app does not: a picture of a rolling restart would then show the
// machine's saturation, not the pool's. A steady rate keeps the pool's view readable and still
// borrows through every worker the roll brings in. Requests ride kept-alive connections (at
// most `sockets` of them, like a proxy in front of the app).

export interface PacedLoad {
  outcomes: Outcome[]
  /** Sends nothing more; resolves once every request sent has its outcome. */
  stop: () => Promise<Outcome[]>
}

export function startPacedLoad (options: Omit<LoadOptions, 'requests' | 'concurrency'> & { rate: number, sockets: number }): PacedLoad {
  const agent = new Agent({ keepAlive: true, maxSockets: options.sockets })
  const outcomes: Outcome[] = []
  const inFlight = new Set<Promise<void>>()
  const interval = 1000 / options.rate
  const started = performance.now()
  let sent = 0
  let timer: NodeJS.Timeout | undefined
  const tick = () => {
    // Catch up on the requests a late timer owes, so the rate holds over any second.
    const due = Math.floor((performance.now() - started) / interval) + 1
    while (sent < due) {
      const request = sendOne({ ...options, requests: Number.POSITIVE_INFINITY, concurrency: options.sockets }, sent++, agent)
        .then((outcome) => { outcomes.push(outcome) })
      inFlight.add(request)
      request.finally(() => inFlight.delete(request)).catch(() => {})
    }
    timer = setTimeout(tick, Math.max(0, started + sent * interval - performance.now()))
  }
  tick()
  return {
    outcomes,
    stop: async () => {
      clearTimeout(timer)
      await Promise.all(inFlight)
      agent.destroy()
      return outcomes
    }
  }
}
