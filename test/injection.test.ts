import type { FastifyInstance } from 'fastify'
import forkSafeDb from '../lib'
import { buildApp } from './helpers/app'
import { perTestUser } from './helpers/database'

// Values are always bound, never interpolated: a corpus of classic injection payloads goes
// through request.db's query builder and through raw SQL with bindings, as lookups and as
// stored data. An injection "succeeds" if a lookup finds a row it should not, a stored value
// comes back different, or the table changes.

const fixture = perTestUser({ ownDatabase: true })

const BASE_PAYLOADS = [
  '\' OR \'1\'=\'1', '\' OR 1=1 --', '\' OR 1=1#', '" OR ""="', '\'; DROP TABLE accounts; --', '1; DROP TABLE accounts',
  '1\' UNION SELECT secret FROM accounts --', '%\' OR 1=1 --', 'admin\'--', '\' OR \'x\'=\'x', '\\\'; DROP TABLE accounts; --',
  '\\', '\\\\\'', '\'\'', '`', '`; DROP TABLE accounts; --', '/**/OR/**/1=1', '1 OR SLEEP(1)', '\' AND SLEEP(1) --',
  '0x27204f5220313d31', 'ʼ OR 1=1 --', '＇ OR 1=1 --', '\u0000\' OR 1=1 --', '\'\u0000', '\' OR 1=1 LIMIT 1 --',
  'x\' AND (SELECT COUNT(*) FROM accounts) > 0 --', '\'; UPDATE accounts SET secret=\'pwned\'; --',
  '?', '??', ':name', '$1', '$' + '{1}', '\' OR \'a\' LIKE \'%', 'a\' COLLATE utf8mb4_bin --'
]
// Each payload alone, and embedded in ordinary text.
const PAYLOADS = [...BASE_PAYLOADS, ...BASE_PAYLOADS.map((payload) => `someone${payload}@example.com`)]
const ORIGINAL = [
  { id: 1, email: 'alice@example.com', secret: 'alice-secret' },
  { id: 2, email: 'bob@example.com', secret: 'bob-secret' },
  { id: 3, email: 'admin', secret: 'admin-secret' }
]

let app: FastifyInstance

beforeEach(async () => {
  const admin = fixture.database.admin
  await admin.query(`CREATE TABLE \`${fixture.user.user}\`.accounts (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(255) NOT NULL, secret VARCHAR(100) NOT NULL) DEFAULT CHARSET=utf8mb4`)
  await admin.query(`INSERT INTO \`${fixture.user.user}\`.accounts (id, email, secret) VALUES ?`, [ORIGINAL.map((row) => [row.id, row.email, row.secret])])
  app = buildApp().app
  await app.register(forkSafeDb, { connection: fixture.user.url, pool: { min: 1, max: 2 } })
  await app.ready()
})
afterEach(async () => { await app.close() })

test(`finds nothing and changes nothing for ${PAYLOADS.length} injection payloads, through the builder and through raw bindings`, async () => {
  expect(PAYLOADS.length).toBeGreaterThanOrEqual(50)
  const db = app.db
  const injections: string[] = []
  for (const payload of PAYLOADS) {
    const viaBuilder = await db('accounts').where({ email: payload }).select('id')
    const viaRaw = (await db.raw('SELECT id FROM accounts WHERE email = ?', [payload]))[0]
    const viaWhereRaw = await db('accounts').whereRaw('email = ? AND secret = ?', [payload, payload]).select('id')
    if (viaBuilder.length + viaRaw.length + viaWhereRaw.length > 0) injections.push(`lookup: ${payload}`)

    const [id] = await db('accounts').insert({ email: payload, secret: payload })
    const stored = await db('accounts').where({ id }).first()
    if (stored?.email !== payload || stored?.secret !== payload) injections.push(`stored: ${payload}`)
    await db.raw('DELETE FROM accounts WHERE id = ?', [id])
  }
  expect(injections).toEqual([])
  expect(await db('accounts').select('id', 'email', 'secret').orderBy('id')).toEqual(ORIGINAL)
})
