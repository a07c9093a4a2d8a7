// `db.operation.name` of a statement, kept to a short list of SQL verbs so the attribute's
// cardinality stays bounded: knex's method where it names one (a builder's `first` and `pluck`
// are SELECTs, `del` a DELETE, an increment an `update`), else the statement's first word when
// it is one of the verbs below (a `raw()`). Anything else (a CTE's WITH, a comment first, an
// unlisted command) has no operation name: the conventions make it conditional. A registration
// that allows several statements in one (`allowUnsafe.multipleStatements`) reads no first word:
// `SELECT 1; DELETE FROM users` would be counted as a SELECT.

const BY_METHOD: ReadonlyMap<string, string> = new Map([
  ['select', 'SELECT'],
  ['first', 'SELECT'],
  ['pluck', 'SELECT'],
  ['columnInfo', 'SELECT'],
  ['insert', 'INSERT'],
  ['update', 'UPDATE'],
  ['del', 'DELETE'],
  ['truncate', 'TRUNCATE']
])

const VERBS: ReadonlySet<string> = new Set([
  'SELECT', 'INSERT', 'UPDATE', 'DELETE', 'REPLACE', 'CALL', 'TRUNCATE', 'CREATE', 'ALTER', 'DROP', 'RENAME',
  'SET', 'SHOW', 'DESCRIBE', 'EXPLAIN', 'BEGIN', 'START', 'COMMIT', 'ROLLBACK', 'SAVEPOINT', 'RELEASE',
  'LOCK', 'UNLOCK', 'KILL', 'DO', 'LOAD', 'ANALYZE', 'OPTIMIZE', 'GRANT', 'REVOKE', 'USE'
])

const FIRST_WORD = /^\s*\(?\s*([A-Za-z]+)/

/**
 * The statement's SQL verb, or undefined when it is none of the listed ones. `fromText` false
 * (a registration that allows several statements in one): knex's method only, never the text.
 */
export function operationName (method: string | undefined, sql: string, fromText = true): string | undefined {
  const known = method === undefined ? undefined : BY_METHOD.get(method)
  if (known !== undefined || !fromText) return known
  const word = FIRST_WORD.exec(sql)?.[1].toUpperCase()
  return word !== undefined && VERBS.has(word) ? word : undefined
}
