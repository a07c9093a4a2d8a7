/**
 * Resolves once `count` parties have called it: each waits for the others. Orders concurrent
 * transactions by an event (both hold their first lock), not by a sleep.
 */
export function barrier (count: number): () => Promise<void> {
  let arrived = 0
  let release!: () => void
  const all = new Promise<void>((resolve) => { release = resolve })
  return () => {
    arrived += 1
    if (arrived === count) release()
    return all
  }
}
