'use strict'

module.exports = require('neostandard')({
  ts: true,
  ignores: ['dist/**', 'build/**', 'node_modules/**', 'bench/results/**', 'coverage/**', '.consumer-*/**', '.doc-blocks/**']
})
