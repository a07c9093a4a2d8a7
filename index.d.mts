// The types of `import … from 'fastify-fork-safe-db'` in an ES module. Under node16/nodenext
// resolution TypeScript types the default import of a CommonJS package as its whole
// `module.exports`; this entry states that the default export is the plugin itself.
import { forkSafeDb } from './dist/index.js'
export default forkSafeDb
export * from './dist/index.js'
