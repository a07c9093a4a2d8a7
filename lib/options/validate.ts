// Small checks shared by the option validators. Each returns nothing or throws the coded error
// it is given, with a message that names the option, what was expected and what arrived.

type ErrorConstructor = new (message: string) => Error

/** `` `12` (number) ``; secrets are described by type only. */
export function describeValue (value: unknown, secret = false): string {
  if (secret) return `a value of type ${typeOf(value)}`
  if (typeof value === 'string') return `\`${JSON.stringify(value).slice(1, -1)}\` (string)`
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') {
    return `\`${String(value)}\` (${typeof value})`
  }
  return typeOf(value)
}

function typeOf (value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  return typeof value
}

export function isPlainObject (value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false
  const prototype = Object.getPrototypeOf(value)
  return prototype === Object.prototype || prototype === null
}

/**
 * A copy of `object`'s enumerable own properties, plus those of `readByName` that are own but not
 * enumerable. A spread copies only the enumerable ones, and a password is often not: knex hides it
 * on the configuration it keeps (`knex.client.config.connection`), and some secret managers hand
 * one out that way. knex and mysql2 read their options by name, so they see it; so must we. Other
 * hidden properties are left behind, as a spread (and knex) leaves them: node-config, for one,
 * hides its `get` and `has` methods on every object it hands out.
 */
export function copyOptions (object: Record<string, unknown>, readByName: readonly string[]): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...object }
  for (const key of readByName) {
    if (!Object.prototype.propertyIsEnumerable.call(object, key) && Object.prototype.hasOwnProperty.call(object, key)) copy[key] = object[key]
  }
  return copy
}

export function isInteger (value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max
}

/** Throws `ErrorType` unless `value` is an integer in [min, max]. */
export function expectInteger (
  ErrorType: ErrorConstructor, name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER, range?: string
): asserts value is number {
  if (isInteger(value, min, max)) return
  const expected = range ?? (max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`)
  throw new ErrorType(`${name} must be ${expected}, got ${describeValue(value)}`)
}

/** Rejects keys of `object` that are not in `known`. */
export function expectKnownKeys (
  ErrorType: ErrorConstructor, name: string, object: Record<string, unknown>, known: readonly string[]
): void {
  for (const key of Object.keys(object)) {
    if (!known.includes(key)) {
      throw new ErrorType(`${name}.${key} is not a known option; expected one of: ${known.join(', ')}`)
    }
  }
}
