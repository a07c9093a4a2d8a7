import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'

// A few tests run what ships (dist/: the exports and packaging tests) or the compiled example
// (build/: the example, pm2 and stress tests). `npm install` builds both once (the `prepare`
// script), and `npm test` does not build again; so that a test never runs a build older than
// the sources, the build is redone here when a source is newer than it.

const ROOT = join(__dirname, '..', '..')
const SOURCES = ['lib', 'example-app', 'support', 'scripts']
const CONFIGS = ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'tsconfig.example.json']
const BUILT = [join('dist', 'index.js'), join('build', 'example-app', 'main.js')]

function newest (path: string): number {
  const stats = statSync(path)
  if (!stats.isDirectory()) return stats.mtimeMs
  return readdirSync(path).reduce((latest, name) => Math.max(latest, newest(join(path, name))), 0)
}

/** Builds dist/ and build/ unless both are newer than every source; returns whether it built. */
export function ensureBuilt (): boolean {
  const built = BUILT.map((file) => join(ROOT, file))
  const sources = [...SOURCES, ...CONFIGS].map((name) => join(ROOT, name)).filter((path) => existsSync(path))
  const source = Math.max(...sources.map(newest))
  if (built.every((file) => existsSync(file) && statSync(file).mtimeMs >= source)) return false
  process.stderr.write('sources changed since the last build: building dist/ and build/ first (npm run prepare)\n')
  execFileSync('npm', ['run', '--silent', 'prepare'], { cwd: ROOT, stdio: 'inherit' })
  return true
}
