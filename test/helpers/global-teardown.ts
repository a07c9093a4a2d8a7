import type { PrivateServer } from '../../support/private-server'

export default async function globalTeardown (): Promise<void> {
  const server = (globalThis as { forkSafeDbPrivateServer?: PrivateServer }).forkSafeDbPrivateServer
  await server?.destroy()
}
