import { histogram, histogramDelta, parsePrometheusText, quantile, quantileBound, select, total, totalBy } from '../bench/rig/prometheus-text'

// The rolling-restart bench reads the example's GET /metrics with this parser and fails on what
// it reads, so the parser is tested on its own: the shapes OpenTelemetry's Prometheus serializer
// writes, and the odd lines a tolerant reader must survive.

const SCRAPE = [
  '# HELP db_client_connection_count The number of connections that are currently in state described by the state attribute',
  '# UNIT db_client_connection_count connections',
  '# TYPE db_client_connection_count gauge',
  'db_client_connection_count{db_client_connection_pool_name="db",db_client_connection_state="idle",process_pid="101"} 2',
  'db_client_connection_count{db_client_connection_pool_name="db",db_client_connection_state="used",process_pid="101"} 1',
  'db_client_connection_count{db_client_connection_pool_name="db",db_client_connection_state="idle",process_pid="202"} 3',
  'db_client_connection_count{db_client_connection_pool_name="db",db_client_connection_state="used",process_pid="202"} 0',
  '# TYPE db_client_connection_wait_time_seconds histogram',
  'db_client_connection_wait_time_seconds_bucket{process_pid="101",le="0.001"} 8',
  'db_client_connection_wait_time_seconds_bucket{process_pid="101",le="0.01"} 9',
  'db_client_connection_wait_time_seconds_bucket{process_pid="101",le="+Inf"} 10',
  'db_client_connection_wait_time_seconds_sum{process_pid="101"} 0.05',
  'db_client_connection_wait_time_seconds_count{process_pid="101"} 10',
  'db_client_connection_wait_time_seconds_bucket{process_pid="202",le="0.001"} 10',
  'db_client_connection_wait_time_seconds_bucket{process_pid="202",le="0.01"} 10',
  'db_client_connection_wait_time_seconds_bucket{process_pid="202",le="+Inf"} 10',
  'db_client_connection_wait_time_seconds_sum{process_pid="202"} 0.002',
  'db_client_connection_wait_time_seconds_count{process_pid="202"} 10',
  'example_metrics_workers{outcome="answered"} 2',
  'example_metrics_workers{outcome="missing"} 0',
  ''
].join('\n')

test('reads every sample of a scrape with its labels and value', () => {
  const { samples, skipped } = parsePrometheusText(SCRAPE)
  expect(skipped).toEqual([])
  expect(samples).toHaveLength(16)
  expect(select(samples, 'db_client_connection_count', { process_pid: '202', db_client_connection_state: 'idle' }))
    .toEqual([{ name: 'db_client_connection_count', labels: { db_client_connection_pool_name: 'db', db_client_connection_state: 'idle', process_pid: '202' }, value: 3 }])
})

test('keeps TYPE and HELP by metric name and skips other comments', () => {
  const { types, help } = parsePrometheusText(SCRAPE)
  expect(types.get('db_client_connection_count')).toBe('gauge')
  expect(types.get('db_client_connection_wait_time_seconds')).toBe('histogram')
  expect(help.get('db_client_connection_count')).toMatch(/^The number of connections/)
  expect(types.has('db_client_connection_count_connections')).toBe(false)
})

test('sums a metric over the series that match, and by one label', () => {
  const { samples } = parsePrometheusText(SCRAPE)
  expect(total(samples, 'db_client_connection_count')).toBe(6)
  expect(total(samples, 'db_client_connection_count', { db_client_connection_state: 'idle' })).toBe(5)
  expect(totalBy(samples, 'db_client_connection_count', 'process_pid')).toEqual(new Map([['101', 3], ['202', 3]]))
  expect(total(samples, 'no_such_metric')).toBe(0)
})

test('reads escaped label values, special floats, timestamps, CRLF and labels with spaces or a trailing comma', () => {
  const text = [
    'a{path="C:\\\\dir",quote="say \\"hi\\"",nl="x\\ny"} 1',
    'b NaN',
    'c{le="+Inf"} +Inf',
    'd -Inf 1700000000000',
    'e{ x = "1" , y="2", } 2.5e-3\r',
    'f_total 7'
  ].join('\r\n')
  const { samples, skipped } = parsePrometheusText(text)
  expect(skipped).toEqual([])
  expect(samples[0].labels).toEqual({ path: 'C:\\dir', quote: 'say "hi"', nl: 'x\ny' })
  expect(samples[1].value).toBeNaN()
  expect(samples[2].value).toBe(Number.POSITIVE_INFINITY)
  expect(samples[3]).toEqual({ name: 'd', labels: {}, value: Number.NEGATIVE_INFINITY, timestamp: 1700000000000 })
  expect(samples[4]).toEqual({ name: 'e', labels: { x: '1', y: '2' }, value: 0.0025 })
  expect(samples[5].value).toBe(7)
})

test('keeps a line it cannot read apart instead of failing the scrape', () => {
  const text = 'good 1\nbroken{a="1" 2\nno_value{a="1"}\nbad_value x\n{x="1"} 3\ntoo many fields 4 5 6\n# EOF\nalso_good 2'
  const { samples, skipped } = parsePrometheusText(text)
  expect(samples.map((sample) => sample.name)).toEqual(['good', 'also_good'])
  expect(skipped).toEqual(['broken{a="1" 2', 'no_value{a="1"}', 'bad_value x', '{x="1"} 3', 'too many fields 4 5 6'])
})

test('adds a histogram up over processes, bucket by bucket', () => {
  const { samples } = parsePrometheusText(SCRAPE)
  const wait = histogram(samples, 'db_client_connection_wait_time_seconds')
  expect(wait.count).toBe(20)
  expect(wait.sum).toBeCloseTo(0.052, 9)
  expect([...wait.buckets]).toEqual([[0.001, 18], [0.01, 19], [Number.POSITIVE_INFINITY, 20]])
})

test('estimates a quantile as histogram_quantile() does, from the difference of two scrapes', () => {
  const before = histogram(parsePrometheusText('w_bucket{le="0.001"} 10\nw_bucket{le="0.01"} 10\nw_bucket{le="+Inf"} 10\nw_sum 0.001\nw_count 10').samples, 'w')
  const after = histogram(parsePrometheusText('w_bucket{le="0.001"} 60\nw_bucket{le="0.01"} 110\nw_bucket{le="+Inf"} 110\nw_sum 0.3\nw_count 110').samples, 'w')
  const interval = histogramDelta(before, after)
  expect(interval.count).toBe(100)
  expect(interval.sum).toBeCloseTo(0.299, 9)
  // Rank 99 of 100: 49 of the 50 in (0.001, 0.01], so 0.001 + 0.009 * 49 / 50.
  expect(quantile(interval, 0.99)).toBeCloseTo(0.00982, 9)
  // Rank 25 of 100, inside the first bucket: interpolated from 0.
  expect(quantile(interval, 0.25)).toBeCloseTo(0.0005, 9)
  expect(quantile(histogramDelta(before, before), 0.99)).toBeNaN()
})

test('a rank in the +Inf bucket answers the highest finite bound', () => {
  const state = histogram(parsePrometheusText('w_bucket{le="1"} 1\nw_bucket{le="+Inf"} 10\nw_sum 50\nw_count 10').samples, 'w')
  expect(quantile(state, 0.99)).toBe(1)
})

test('bounds a quantile by the upper edge of its bucket', () => {
  const state = histogram(parsePrometheusText('w_bucket{le="0.001"} 98\nw_bucket{le="0.005"} 99\nw_bucket{le="+Inf"} 100\nw_sum 1\nw_count 100').samples, 'w')
  expect(quantileBound(state, 0.5)).toBe(0.001)
  expect(quantileBound(state, 0.99)).toBe(0.005)
  expect(quantileBound(state, 0.999)).toBe(Number.POSITIVE_INFINITY)
  expect(quantileBound({ buckets: new Map(), sum: 0, count: 0 }, 0.99)).toBeNaN()
})
