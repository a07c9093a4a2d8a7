import http, { type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'

// One HTTP request through a real socket of its own (no agent, no keep-alive), the way a client
// that opens a new connection per request sees the app: streams, hang-ups and hijacked replies
// behave there as they do in production, not as under inject().

export interface Received {
  status: number
  headers: IncomingMessage['headers']
  body: string
  /** The body ended as HTTP says it should (its last chunk arrived); false when the server aborted it. */
  complete: boolean
}

export interface Sent {
  method?: string
  body?: unknown
}

export function portOf (app: FastifyInstance): number {
  return (app.server.address() as AddressInfo).port
}

/** Sends the request and reads the whole response; an aborted body comes back with `complete: false`. */
export function request (app: FastifyInstance, path: string, sent: Sent = {}): Promise<Received> {
  const payload = sent.body === undefined ? undefined : JSON.stringify(sent.body)
  return new Promise((resolve, reject) => {
    const outgoing = http.request({
      host: '127.0.0.1',
      port: portOf(app),
      path,
      method: sent.method ?? 'GET',
      agent: false,
      headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
    }, (response) => {
      const chunks: Buffer[] = []
      let complete = false
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.once('end', () => { complete = response.complete })
      response.once('error', () => {})
      response.once('close', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks).toString('utf8'), complete }))
    })
    outgoing.once('error', reject)
    outgoing.end(payload)
  })
}

/** Sends GET `path` and hangs up once `ready` resolves (for example once its statement runs on the server). */
export async function hangUpWhen (app: FastifyInstance, path: string, ready: (response: Promise<IncomingMessage>) => Promise<unknown>): Promise<void> {
  const outgoing = http.get({ host: '127.0.0.1', port: portOf(app), path, agent: false })
  const closed = new Promise((resolve) => outgoing.once('close', resolve))
  outgoing.on('error', () => {})
  const response = new Promise<IncomingMessage>((resolve) => outgoing.once('response', resolve))
  response.then((incoming) => incoming.on('error', () => {})).catch(() => {})
  await ready(response)
  outgoing.destroy()
  await closed
}
