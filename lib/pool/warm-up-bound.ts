// Fastify gives each onReady hook `pluginTimeout` (10 s by default) and then rejects ready()
// with its own FST_ERR_HOOK_TIMEOUT ("you may have forgotten to call 'done'"). mysql2's
// connectTimeout is 10 s by default too: against a host that accepts TCP and never answers,
// Fastify's timer won, and the connect went on after close(). So warm-up keeps a bound of its
// own, nine tenths of pluginTimeout: the last tenth (a second by default) is left for closing the
// sockets being opened and destroying the pool, so ready() rejects with the plugin's own
// FST_FORK_SAFE_DB_WARMUP_FAILED. It is not capped at connectTimeout: a warm-up opens several
// connections, some one after another, and a slow but live server may need longer than one
// connect for them all; a connect that times out by itself fails warm-up at once anyway. With
// pluginTimeout 0 (Fastify waits for ever) there is no bound of the plugin's either: each connect
// is bounded by connectTimeout and each verification by the acquire timeout.

const SHARE = 0.9

/** How long warm-up may take in milliseconds under Fastify's `pluginTimeout`; undefined for no bound. */
export function warmUpBoundMillis (pluginTimeout: number | undefined): number | undefined {
  if (pluginTimeout === undefined || !Number.isFinite(pluginTimeout) || pluginTimeout <= 0) return undefined
  return Math.max(1, Math.floor(pluginTimeout * SHARE))
}
