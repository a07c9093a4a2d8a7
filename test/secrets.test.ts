import forkSafeDb from '../lib'
import { buildApp, type LoggedApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// The failure paths, run with the logger at trace into a buffer and every HTTP response kept:
// neither may contain the password, the credentials URL or a bound secret value.

const fixture = perTestUser({ ownDatabase: true })
const SECRET = 'bound-s3cr3t-4e1f9a77'

const apps: LoggedApp[] = []
afterEach(async () => {
  for (const logged of apps.splice(0)) await logged.app.close()
})

function everything (bodies: string[]): string {
  return [...bodies, ...apps.map((logged) => logged.text())].join('\n')
}

test('leaks no password, credentials URL or bound value through any failure path', async () => {
  const { user } = fixture
  await fixture.database.admin.query(`CREATE TABLE \`${user.user}\`.vault (id INT AUTO_INCREMENT PRIMARY KEY, token VARCHAR(100) NOT NULL UNIQUE)`)
  await fixture.database.admin.query(`INSERT INTO \`${user.user}\`.vault (token) VALUES (?)`, [SECRET])

  const main = buildApp()
  apps.push(main)
  await main.app.register(forkSafeDb, {
    connection: user.url,
    pool: { min: 1, max: 1, acquireTimeoutMillis: 300 },
    maxPendingAcquires: 1,
    queryTimeoutMillis: 200
  })
  main.app.post('/duplicate', async (request) => request.db('vault').insert({ token: SECRET }))
  main.app.get('/syntax', async (request) => request.db.raw('SELEC ? FROM vault', [SECRET]))
  main.app.get('/slow', async (request) => request.db.raw('SELECT SLEEP(2), ? AS token', [SECRET]))
  // Returns no data of its own: a success body may of course contain what the handler sends.
  main.app.get('/hold', async (request) => {
    await request.db.raw('SELECT SLEEP(0.15), ? AS token', [SECRET]).timeout(1000, { cancel: true })
    return 'held'
  })

  const failedWarmup = buildApp()
  apps.push(failedWarmup)
  await failedWarmup.app.register(forkSafeDb, { connection: user.url.replace(encodeURIComponent(user.password), 'not-the-password'), allowColdStart: true })
  await failedWarmup.app.ready()

  await main.app.ready()
  const responses = [
    await main.app.inject({ method: 'POST', url: '/duplicate' }),
    await main.app.inject('/syntax'),
    await main.app.inject('/slow'),
    // One holds the only connection, one waits (and times out), one finds the queue full.
    ...await Promise.all([main.app.inject('/hold'), main.app.inject('/hold'), main.app.inject('/hold')])
  ]
  const codes = responses.map((response) => response.statusCode === 200 ? 200 : response.json<{ code?: string }>().code)
  expect(codes).toEqual(expect.arrayContaining([
    'ER_DUP_ENTRY', 'ER_PARSE_ERROR', 'FST_FORK_SAFE_DB_QUERY_TIMEOUT', 'FST_FORK_SAFE_DB_POOL_SATURATED'
  ]))
  await failedWarmup.app.inject('/') // 404 either way; its warm-up failure is already in the log

  const sent = everything(responses.map((response) => `${JSON.stringify(response.headers)}\n${response.body}`))
  expect(sent).toContain('ER_DUP_ENTRY')
  for (const secret of [user.password, encodeURIComponent(user.password), user.url, SECRET]) expect(sent).not.toContain(secret)
})
