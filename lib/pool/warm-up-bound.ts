// Fastify gives each onReady hook `pluginTimeout` (10 s by default) and then rejects ready()
// with its own FST_ERR_HOOK_TIMEOUT ("you may have forgotten to call 'done'"). mysql2's
// connectTimeout is 10 s by default too: against a host that accepts TCP and never answers,
// Fastify's timer won, and the connect went on after close(). So warm-up keeps a bound of its
// own, pluginTimeout less a margin in which the sockets being opened are closed and the pool is
// destroyed (tarn's destroy polls its borrowed connections every 100 ms), so that ready() rejects
// with the plugin's FST_FORK_SAFE_DB_WARMUP_FAILED: the margin is a tenth of pluginTimeout, at
// least 500 ms, and at most half of it. The bound is not capped at connectTimeout: a warm-up opens
// several connections, some one after another, and a slow but live server may need longer than
// one connect for them all; a connect that fails by itself fails warm-up at once anyway, and the
// acquire timeout bounds each connection. With pluginTimeout 0 (Fastify waits for ever) the
// plugin adds no bound either.

const MARGIN_SHARE = 0.1
const MIN_MARGIN_MILLIS = 500

/** How long warm-up may take in milliseconds under Fastify's `pluginTimeout`; undefined for no bound. */
export function warmUpBoundMillis (pluginTimeout: number | undefined): number | undefined {
  if (pluginTimeout === undefined || !Number.isFinite(pluginTimeout) || pluginTimeout <= 0) return undefined
  const margin = Math.max(pluginTimeout * MARGIN_SHARE, Math.min(MIN_MARGIN_MILLIS, pluginTimeout / 2))
  return Math.max(1, Math.floor(pluginTimeout - margin))
}
