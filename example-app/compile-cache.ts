import module from 'node:module'

// Imported first by main.ts, before Fastify, knex and mysql2 are loaded: on Node 22.1 and later
// the compiled code of every module is cached on disk, so a worker started after the first one
// (a respawn, a recycle, a rolling restart) loads its dependencies from the cache. Loading them
// is most of the time a worker takes to start. On older Node there is no cache; nothing happens.

const enable = (module as { enableCompileCache?: () => unknown }).enableCompileCache
enable?.()
