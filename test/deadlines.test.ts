import { EventEmitter, once } from 'node:events'
import { Deadlines } from '../lib/query/deadlines'

// The default query timeout's queue: one timer for every statement's deadline, so it must fire
// each deadline on time and in order, and statements that end must not pile up behind one that
// runs long.

test('fires each deadline after its time, in order, and not one that ended first', async () => {
  const deadlines = new Deadlines(50)
  const fired: string[] = []
  const events = new EventEmitter()
  const started = performance.now()
  const record = (name: string) => () => { fired.push(`${name} at ${performance.now() - started >= 50 ? 'or after' : 'before'} 50 ms`); events.emit(name) }
  try {
    deadlines.start(record('first'))
    const ended = deadlines.start(record('ended'))
    deadlines.start(record('last'))
    deadlines.end(ended)
    await once(events, 'last')
    expect(fired).toEqual(['first at or after 50 ms', 'last at or after 50 ms'])
  } finally {
    deadlines.stop()
  }
})

test('does not keep ended statements queued behind one that runs long', () => {
  const deadlines = new Deadlines(60_000)
  try {
    const longRunning = deadlines.start(() => {})
    for (let statement = 0; statement < 20_000; statement++) deadlines.end(deadlines.start(() => {}))
    // Without compaction all 20,001 would stay until the long one's deadline, a minute away.
    expect(deadlines.queued).toBeLessThanOrEqual(4096)
    deadlines.end(longRunning)
    expect(deadlines.queued).toBe(0)
  } finally {
    deadlines.stop()
  }
})
