import { createHook } from 'node:async_hooks'

// "Leaves no timer behind", asserted on the timers a test made, not on the process's count:
// Jest's own reporter starts and clears a status timer in the same process at any moment.

const JEST_OWN = /node_modules\/(@jest|jest-)/

/** Tracks the timers created from now on; `alive()` lists (by where they were made) those neither run nor cleared. */
export function watchTimers (): { alive: () => Promise<string[]>, stop: () => void } {
  const live = new Map<number, string>()
  const hook = createHook({
    init (id, type) {
      if (type !== 'Timeout') return
      const limit = Error.stackTraceLimit
      Error.stackTraceLimit = 30
      const stack = (new Error().stack ?? '').split('\n').slice(6).join('\n')
      Error.stackTraceLimit = limit
      if (!JEST_OWN.test(stack)) live.set(id, stack)
    },
    destroy (id) { live.delete(id) }
  }).enable()
  return {
    // Destroy hooks are emitted asynchronously: let them run first.
    alive: async () => {
      await new Promise((resolve) => setImmediate(resolve))
      await new Promise((resolve) => setImmediate(resolve))
      return [...live.values()]
    },
    stop: () => { hook.disable() }
  }
}
