import cluster from 'node:cluster'
import pino, { type Logger, type LoggerOptions } from 'pino'

// On a terminal the example prints lines a person can read (pino-pretty, the Fastify
// ecosystem's printer); anywhere else (a pipe, a log collector, the tests) one JSON object per
// line. LOG_LEVEL (default info) applies to the primary and to every worker. Workers share the
// primary's terminal, so they decide the same way.

const PRETTY = process.stdout.isTTY === true

/** pino's options for the primary or a worker (Fastify takes the same object as `logger`). */
export function loggerOptions (name: string): LoggerOptions {
  return {
    name,
    level: process.env.LOG_LEVEL ?? 'info',
    ...(PRETTY ? { transport: { target: 'pino-pretty', options: { ignore: 'hostname', translateTime: 'SYS:HH:MM:ss.l', singleLine: true } } } : {})
  }
}

export function primaryLogger (): Logger {
  return pino(loggerOptions('primary'))
}

/** This worker's id in the cluster (its pid outside one): request ids and log names carry it. */
export function workerId (): number {
  return cluster.worker?.id ?? process.pid
}

/** What the worker's lines are named: `worker 2`. */
export function workerName (): string {
  return `worker ${workerId()}`
}

/** Whether output goes to a terminal (plain tables and one readable line per request). */
export function onTerminal (): boolean {
  return PRETTY
}
