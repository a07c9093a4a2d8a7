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

function resources () {
  return process.getActiveResourcesInfo().filter((type) => !OWN.has(type))
}

/** What is alive now and was not when `before` was taken: one file's leak is not blamed on the next. */
function leftovers (before) {
  const remaining = [...before]
  return resources().filter((type) => {
    const index = remaining.indexOf(type)
    if (index === -1) return true
    remaining.splice(index, 1)
    return false
  })
}

// Which sockets, so a leak can be traced to its test: where each one goes, and whether it is
// still connecting. (process._getActiveHandles() is undocumented; it only feeds this message.)
function describeSockets () {
  const getHandles = process._getActiveHandles
  if (typeof getHandles !== 'function') return ''
  const sockets = getHandles.call(process).filter((handle) => handle !== null && typeof handle === 'object' && 'remotePort' in handle && !handle._isStdio)
    .map((socket) => {
      // A connecting socket knows no peer yet; an HTTP client's request says where it goes.
      const request = socket._httpMessage
      const http = request != null && typeof request.getHeader === 'function' ? ` (HTTP ${request.method} ${request.getHeader('host')}${request.path})` : ''
      return `${socket.connecting ? 'connecting' : 'open'} to ${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}${http}`
    })
  return sockets.length === 0 ? '' : ` (sockets: ${sockets.join('; ')})`
}

class LeakCheckingEnvironment extends TestEnvironment {
  #before = []

  async setup () {
    await super.setup()
    // A Jest worker runs file after file: what an earlier file left is that file's failure.
    this.#before = resources()
  }

  async teardown () {
    await super.teardown()
    const deadline = performance.now() + SETTLE_MILLIS
    let left = leftovers(this.#before)
    while (left.length > 0 && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20))
      left = leftovers(this.#before)
    }
    if (left.length > 0) throw new Error(`the test file left these behind: ${left.join(', ')}${describeSockets()}`)
  }
}

module.exports = LeakCheckingEnvironment
