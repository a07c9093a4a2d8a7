'use strict'

/** @type {import('jest').Config} */
module.exports = {
  // Node's, failing a test file that leaves a socket, server, child process or timer behind.
  testEnvironment: '<rootDir>/test/helpers/environment.js',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.json' }],
    // light-my-request (fastify.inject) requires cookie 2, which ships only as ESM; Jest on
    // Node 20 cannot require() ESM, so that one package is compiled to CommonJS.
    '/node_modules/cookie/.+\\.js$': ['ts-jest', { tsconfig: { allowJs: true, module: 'commonjs', target: 'ES2022' } }]
  },
  transformIgnorePatterns: ['/node_modules/(?!cookie/)'],
  // One database server for the whole run: MYSQL_URL, the machine's server, or a private one.
  globalSetup: '<rootDir>/test/helpers/global-setup.ts',
  globalTeardown: '<rootDir>/test/helpers/global-teardown.ts',
  testTimeout: 30000,
  // Two cores: two workers keep the database and the test processes from starving each other.
  maxWorkers: 2
}
