import { resolveServer } from '../../support/server-url'

// Runs once in Jest's parent process; the workers inherit the environment variable.
export default async function globalSetup (): Promise<void> {
  const server = await resolveServer()
  process.env.FORK_SAFE_DB_TEST_ADMIN_URL = server.url
  ;(globalThis as { forkSafeDbPrivateServer?: unknown }).forkSafeDbPrivateServer = server.privateServer
}
