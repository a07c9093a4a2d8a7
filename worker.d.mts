// The types of `import … from 'fastify-fork-safe-db/worker'` in an ES module: the default export
// is the plugin itself, not the CommonJS module object (see index.d.mts).
import { forkSafeWorker } from './dist/worker/index.js'
export default forkSafeWorker
export * from './dist/worker/index.js'
