'use strict'

// The users API under pm2's cluster mode (build it first: `npm run build:example`, and create the
// schema as a deployment runs its migrations):
//   MYSQL_URL=mysql://root@127.0.0.1:3306/test npx pm2 start example-app/ecosystem.config.js
// test/pm2.test.ts starts, loads, reloads, scales and deletes it with the real pm2.

const { join } = require('node:path')

const instances = Number(process.env.WORKERS ?? 2)

module.exports = {
  apps: [{
    name: process.env.PM2_APP_NAME ?? 'users-api',
    script: join(__dirname, '..', 'build', 'example-app', 'worker.js'),
    exec_mode: 'cluster',
    instances,
    // pm2 reloads two instances at a time (PM2_CONCURRENT_ACTIONS): the budget counts both.
    // No metrics endpoint: it is the example's primary's, and pm2 is the primary here. Under pm2,
    // each process exports its own (docs/cluster-metrics.md).
    env: { WORKERS: String(instances), OVERLAP: '2', METRICS_PORT: '0' },
    // Online only once the pool is warm, the request path warmed and the port shared.
    wait_ready: true,
    listen_timeout: 20000,
    // SIGINT, then SIGKILL after this long: more than the worker helper's bounds add up to
    // (drainMillis 5 s + closeMillis 10 s + one more drainMillis + disconnectMillis 5 s).
    kill_timeout: 30000
  }]
}
