// The types of `import … from 'fastify-fork-safe-db/cluster'` in an ES module (named exports only).
export * from './dist/cluster/index.js'
