import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'

// Where knex, tarn and mysql2 are installed, and which versions: from each package's main file
// and the package.json beside it (not every release exports `<name>/package.json`).

/** The directory of package `name` (resolved from `from`, e.g. tarn from knex's directory). */
export function packageRoot (name: string, from?: string): string | undefined {
  try {
    let directory = dirname(require.resolve(name, from === undefined ? undefined : { paths: [from] }))
    while (!directory.endsWith(join('node_modules', name)) && dirname(directory) !== directory) directory = dirname(directory)
    return directory
  } catch {
    return undefined
  }
}

/** The version in the package.json of directory `root`; undefined when there is none to read. */
export function packageVersion (root: string | undefined): string | undefined {
  try {
    return String((JSON.parse(readFileSync(join(root ?? '', 'package.json'), 'utf8')) as { version?: unknown }).version)
  } catch {
    return undefined
  }
}

function versionAt (root: string | undefined): string {
  return packageVersion(root) ?? 'not found'
}

/** "knex 3.3.0, tarn 3.1.2, mysql2 3.24.6", as installed next to the plugin. */
export function installedVersions (): string {
  const knexRoot = packageRoot('knex')
  return `knex ${versionAt(knexRoot)}, tarn ${versionAt(packageRoot('tarn', knexRoot))}, mysql2 ${versionAt(packageRoot('mysql2'))}`
}
