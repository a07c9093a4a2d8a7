import { resolveServer } from '../../support/server-url'
import { ensureBuilt } from './ensure-built'

// Runs once in Jest's parent process; the workers inherit the environment variable.
export default async function globalSetup (): Promise<void> {
  ensureBuilt()
  const server = await resolveServer()
  process.env.FORK_SAFE_DB_TEST_ADMIN_URL = server.url
  ;(globalThis as { forkSafeDbPrivateServer?: unknown }).forkSafeDbPrivateServer = server.privateServer
}
