'use strict'

// Jest's Node environment, which also fails a test file that leaves something behind: a socket,
// a server, a child process or a timer still alive once all of the file's hooks have run. (Jest
// would otherwise say only, now and then and without a name, that a worker "failed to exit
// gracefully".) A socket's handle goes a turn or two after close() resolves, so this waits up
// to a second before it calls anything a leftover.

const { TestEnvironment } = require('jest-environment-node')

const SETTLE_MILLIS = 1000
// What a Jest worker holds of its own: its IPC channel and stdio, and the timers and callbacks
// of this check.
const OWN = new Set(['PipeWrap', 'TTYWrap', 'Timeout', 'Immediate', 'FSReqCallback', 'FSReqPromise'])

function leftovers () {
  return process.getActiveResourcesInfo().filter((type) => !OWN.has(type))
}

class LeakCheckingEnvironment extends TestEnvironment {
  async teardown () {
    await super.teardown()
    const deadline = performance.now() + SETTLE_MILLIS
    let left = leftovers()
    while (left.length > 0 && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      left = leftovers()
    }
    if (left.length > 0) throw new Error(`the test file left these behind: ${left.join(', ')}`)
  }
}

module.exports = LeakCheckingEnvironment
