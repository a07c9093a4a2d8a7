// The interpreter of the option descriptions (descriptions.ts): it reads a group of options
// against its table, applies the defaults, and throws the coded error it is given with a message
// that names the option, what was expected and what arrived. The docs (docs/options.md) render
// the same `expected` wording, so a message and the docs never say two different things.

export type ErrorConstructor = new (message: string) => Error

/** The options of one group (the top level, `pool`, `budget`, ...), each by its key. */
export type OptionTable = Readonly<Record<string, OptionSpec>>

/** Lets a default or a bound depend on another option of the group, or of the enclosing one. */
export interface Scope {
  /** The resolved value of option `key` of this group; read now if it was not yet. */
  get: (key: string) => unknown
  /** The enclosing group's scope (for `pool.*`, the top level's). */
  parent: Scope | undefined
}

/** What a given value must be. */
export type Rule =
  | {
    kind: 'integer'
    min: number
    /** A number, or another option (named in the message and the docs) whose value bounds this one. */
    max?: number | { option: string, of: (scope: Scope) => number }
    milliseconds?: boolean
    /** Added to the milliseconds' parenthesis: `(milliseconds, 0 = off)`. */
    note?: string
    /** Replaces the generated wording. */
    expected?: string
  }
  | { kind: 'boolean' }
  | { kind: 'function' }
  | { kind: 'object' }
  | { kind: 'string', pattern?: RegExp, expected?: string }
  | { kind: 'literal', values: ReadonlyArray<string | boolean>, expected?: string }
  | { kind: 'either', rules: readonly Rule[] }
  /** A nested group of options, read with its own table. */
  | { kind: 'group', options: OptionTable, expected?: string }
  /** A check too particular for the kinds above; it throws its own message. */
  | { kind: 'custom', expected: string, check: (value: unknown, name: string, fail: (message: string) => never) => void }

export interface OptionSpec {
  /** The `Type:` line of the docs, in TypeScript's notation. */
  type: string
  /** The docs' one line. */
  doc: string
  rule: Rule
  /** Applied when the option is left out. */
  default?: unknown
  /** A default computed from other options; wins over `default`. */
  defaultFrom?: (scope: Scope) => unknown
  /** The `Default:` line of the docs, when `default` alone does not say it. */
  defaultText?: string
  /** The option must be given: the rest of the message after `is required: `. */
  required?: string
  /** knex tests this option with `if (config.x)`: null means left out, as in a copied knex configuration. */
  nullIsUnset?: boolean
  /** The key is refused whenever it is set: why, for the message and the docs. */
  refused?: string
  /** Turns the checked value (or the default) into what the rest of lib/ works with. */
  map?: (value: unknown, scope: Scope) => unknown
  /** knex's option, passed through (the docs list it apart). */
  knex?: boolean
}

/** How messages are made for one caller: its error, and what prefixes an option's name. */
export interface Reader {
  ErrorType: ErrorConstructor
  /** Before every message: `worker option ` for the worker helper. */
  prefix: string
  /** Names a top-level key in the unknown-key message: `options.` makes `options.warmUp`. */
  root: string
}

/** Reads `object` against `table`: unknown and refused keys are rejected, each option checked, defaults applied. */
export function readOptions (table: OptionTable, object: Record<string, unknown>, reader: Reader, path = '', parent?: Scope): Record<string, unknown> {
  const fail = (message: string): never => { throw new reader.ErrorType(`${reader.prefix}${message}`) }
  const nameOf = (key: string) => path === '' ? key : `${path}.${key}`
  const accepted = Object.keys(table).filter((key) => table[key].refused === undefined)
  for (const key of Object.keys(object)) {
    if (!Object.prototype.hasOwnProperty.call(table, key)) {
      fail(`${path === '' ? reader.root : `${path}.`}${key} is not a known option; expected one of: ${accepted.join(', ')}`)
    }
  }
  // Read by name, as knex reads them: a hidden refused key is refused too.
  for (const [key, spec] of Object.entries(table)) {
    if (spec.refused !== undefined && !isUnset(spec, object[key])) fail(`${nameOf(key)} is not supported: ${spec.refused}`)
  }

  const resolved: Record<string, unknown> = {}
  const state = new Map<string, 'reading' | 'read'>()
  const scope: Scope = {
    parent,
    get (key) {
      if (state.get(key) === 'reading') throw new Error(`the description of option ${nameOf(key)} depends on itself`)
      if (state.get(key) === undefined) {
        state.set(key, 'reading')
        resolved[key] = readOption(table[key], object[key], nameOf(key), scope, reader, fail)
        state.set(key, 'read')
      }
      return resolved[key]
    }
  }
  for (const key of accepted) scope.get(key)
  return resolved
}

function readOption (spec: OptionSpec, given: unknown, name: string, scope: Scope, reader: Reader, fail: (message: string) => never): unknown {
  let value: unknown
  if (isUnset(spec, given)) {
    if (spec.required !== undefined) fail(`${name} is required: ${spec.required}`)
    value = spec.defaultFrom === undefined ? spec.default : spec.defaultFrom(scope)
  } else {
    if (!accepts(spec.rule, given, name, scope, fail)) fail(`${name} must be ${expected(spec.rule, scope)}, got ${describeValue(given)}`)
    value = given
  }
  if (spec.rule.kind === 'group' && value !== undefined) value = readOptions(spec.rule.options, value as Record<string, unknown>, reader, name, scope)
  return spec.map === undefined ? value : spec.map(value, scope)
}

function isUnset (spec: OptionSpec, value: unknown): boolean {
  return value === undefined || (value === null && spec.nullIsUnset === true)
}

function accepts (rule: Rule, value: unknown, name: string, scope: Scope, fail: (message: string) => never): boolean {
  switch (rule.kind) {
    case 'integer': return isInteger(value, rule.min, bound(rule, scope))
    case 'boolean': return typeof value === 'boolean'
    case 'function': return typeof value === 'function'
    case 'object': case 'group': return isPlainObject(value)
    case 'string': return typeof value === 'string' && (rule.pattern === undefined || rule.pattern.test(value))
    case 'literal': return rule.values.includes(value as string | boolean)
    case 'either': return rule.rules.some((each) => accepts(each, value, name, scope, fail))
    case 'custom': rule.check(value, name, fail); return true
  }
}

function bound (rule: Extract<Rule, { kind: 'integer' }>, scope: Scope | undefined): number {
  if (rule.max === undefined) return Number.MAX_SAFE_INTEGER
  if (typeof rule.max === 'number') return rule.max
  return scope === undefined ? Number.NaN : rule.max.of(scope)
}

/**
 * What `rule` accepts, in words: `an integer from 0 to pool.max (10)`. Without a scope (for the
 * docs) a bound that is another option is named, not valued.
 */
export function expected (rule: Rule, scope?: Scope): string {
  switch (rule.kind) {
    case 'integer': {
      if (rule.expected !== undefined) return rule.expected
      if (rule.max !== undefined) {
        const max = typeof rule.max === 'number' ? String(rule.max) : scope === undefined ? rule.max.option : `${rule.max.option} (${bound(rule, scope)})`
        return `an integer from ${rule.min} to ${max}`
      }
      if (rule.milliseconds === true && rule.min <= 1) {
        return `a ${rule.min === 0 ? 'non-negative' : 'positive'} integer (milliseconds${rule.note === undefined ? '' : `, ${rule.note}`})`
      }
      return `an integer >= ${rule.min}`
    }
    case 'boolean': return 'a boolean'
    case 'function': return 'a function'
    case 'object': case 'group': return rule.kind === 'group' && rule.expected !== undefined ? rule.expected : 'an object'
    case 'string': return rule.expected ?? 'a string'
    case 'literal': return rule.expected ?? rule.values.map((value) => typeof value === 'string' ? `'${value}'` : String(value)).join(' or ')
    case 'either': return rule.rules.map((each) => expected(each, scope)).join(' or ')
    case 'custom': return rule.expected
  }
}

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

/** Throws `ErrorType` unless `value` is an integer in [min, max] (for checks outside a table: mysql2's connection settings). */
export function expectInteger (
  ErrorType: ErrorConstructor, name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER, range?: string
): asserts value is number {
  if (isInteger(value, min, max)) return
  const expected = range ?? (max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer from ${min} to ${max}`)
  throw new ErrorType(`${name} must be ${expected}, got ${describeValue(value)}`)
}
