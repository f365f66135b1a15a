#!/usr/bin/env node
// Send Segment calls to a Confiance server with the OFFICIAL Node SDK (@segment/analytics-node).
//
//   node tests/clients/send_node.mjs --host http://127.0.0.1:PORT --write-key KEY --run-id RUN [--gzip] [--count N]
//   node tests/clients/send_node.mjs --host http://127.0.0.1:PORT --write-key KEY --resend-file PREVIOUS_STDOUT
//
// Needs tests/clients/node_modules (scripts/test runs `npm ci` there; the path is exported as
// CONFIANCE_TEST_NODE_MODULES). The SDK batches the messages itself (flushAt, default 15) and
// POSTs them to HOST/v1/batch (the path is configurable with --path).
//
// For every message one JSON line is printed on stdout after closeAndFlush(); nothing else goes
// to stdout, diagnostics go to stderr. The messageId is the one the SDK assigned, read from the
// context that the SDK hands to each call's callback once the message's batch was delivered (or
// given up). Exit status: 0 if the SDK delivered everything, 1 if it reported a delivery failure
// for any message, 2 on bad usage.
//
// --resend-file FILE re-sends exactly the messages of a previous run's stdout (same type,
// messageId, timestamp, ids, traits, properties, ...).
//
// --gzip: the SDK itself has NO gzip support (it always sends a plain JSON string). With --gzip
// this script plugs a fetch function into the SDK's `httpClient` setting (an official extension
// point) that gzips the body the SDK built and adds `Content-Encoding: gzip`; everything else
// (batching, headers, retries) stays the SDK's.

import { parseArgs } from 'node:util'
import { readFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { createRequire } from 'node:module'
import { Analytics } from '@segment/analytics-node'

const require = createRequire(import.meta.url)
const SDK_VERSION = require('@segment/analytics-node/package.json').version

const USAGE = `usage: send_node.mjs --host URL --write-key KEY (--run-id ID [--count N] | --resend-file FILE)
                    [--gzip] [--max-retries N] [--flush-at N] [--timeout-ms MS] [--path /v1/batch]`

function fail(msg, code = 2) {
  process.stderr.write(`send_node: ${msg}\n`)
  process.exit(code)
}

let args
try {
  args = parseArgs({
    options: {
      host: { type: 'string' },
      'write-key': { type: 'string' },
      'run-id': { type: 'string' },
      gzip: { type: 'boolean', default: false },
      count: { type: 'string', default: '3' },
      'resend-file': { type: 'string' },
      'max-retries': { type: 'string', default: '3' },
      'flush-at': { type: 'string', default: '15' },
      'timeout-ms': { type: 'string', default: '60000' },
      path: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  }).values
} catch (e) {
  fail(`${e.message}\n${USAGE}`)
}
if (args.help) {
  process.stdout.write(USAGE + '\n')
  process.exit(0)
}
if (!args.host) fail(`--host is required\n${USAGE}`)
if (!args['write-key']) fail(`--write-key is required\n${USAGE}`)
if (!args['resend-file'] && !args['run-id']) fail(`--run-id is required unless --resend-file is given\n${USAGE}`)
const intArg = (name) => {
  const n = Number(args[name])
  if (!Number.isInteger(n) || n < 0) fail(`--${name} must be a non-negative integer`)
  return n
}
const count = intArg('count')
const maxRetries = intArg('max-retries')
const flushAt = intArg('flush-at')
const timeoutMs = intArg('timeout-ms')

const EVENTS = ['Product Viewed', 'Order Completed', 'Products Searched']
const STYLES = ['jazz', 'rock', 'classique', 'soul', 'electro']
const FIRST_NAMES = ['Camille', 'Louis', 'Inès', 'Hugo', 'Léa']
const PAGES = [['/', 'Accueil'], ['/catalogue', 'Catalogue'], ['/panier', 'Panier']]
const SCREENS = ['Accueil', 'Fiche produit', 'Panier']

// Keys of an output line besides type and messageId; also the SDK params re-sent by --resend-file.
const PAYLOAD_KEYS = ['userId', 'anonymousId', 'event', 'name', 'category', 'properties', 'traits', 'groupId', 'previousId', 'timestamp']
const ALLOWED_PARAMS = {
  identify: ['userId', 'anonymousId', 'traits'],
  track: ['userId', 'anonymousId', 'event', 'properties'],
  page: ['userId', 'anonymousId', 'name', 'category', 'properties'],
  screen: ['userId', 'anonymousId', 'name', 'category', 'properties'],
  group: ['userId', 'anonymousId', 'groupId', 'traits'],
  alias: ['userId', 'previousId'],
}

function* generateCalls(runId, n) {
  for (let i = 0; i < n; i++) {
    yield ['identify', {
      userId: `node-user-${runId}-${i}`,
      anonymousId: `node-anon-${runId}-${i}`,
      traits: {
        email: `node-${runId}-${i}@example.org`,
        first_name: FIRST_NAMES[i % FIRST_NAMES.length],
        favorite_style: STYLES[i % STYLES.length],
      },
    }]
  }
  for (let i = 0; i < n; i++) {
    const event = EVENTS[i % EVENTS.length]
    let properties
    if (event === 'Product Viewed') {
      properties = { product_id: `lp-${i}`, name: 'Kind of Blue', artist: 'Miles Davis', price: 24.99, currency: 'EUR' }
    } else if (event === 'Order Completed') {
      properties = { order_id: `node-order-${runId}-${i}`, total: 49.98, currency: 'EUR' }
    } else {
      properties = { query: 'blue note' }
    }
    yield ['track', { userId: `node-user-${runId}-${i}`, anonymousId: `node-anon-${runId}-${i}`, event, properties }]
  }
  for (let i = 0; i < n; i++) {
    const [path, title] = PAGES[i % PAGES.length]
    // Anonymous page views: no userId.
    yield ['page', { anonymousId: `node-anon-${runId}-${i}`, name: title, properties: { path, title } }]
  }
  for (let i = 0; i < n; i++) {
    const name = SCREENS[i % SCREENS.length]
    yield ['screen', { userId: `node-user-${runId}-${i}`, name, properties: { title: name } }]
  }
  for (let i = 0; i < n; i++) {
    yield ['group', {
      userId: `node-user-${runId}-${i}`,
      groupId: `node-group-${runId}-${i % 2}`,
      traits: { name: i % 2 === 0 ? 'Vinyles & Cie Bastille' : 'Vinyles & Cie Croix-Rousse' },
    }]
  }
  for (let i = 0; i < n; i++) {
    yield ['alias', { previousId: `node-anon-${runId}-${i}`, userId: `node-user-${runId}-${i}` }]
  }
}

function* resendCalls(file) {
  const lines = readFileSync(file, 'utf8').split('\n')
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim()
    if (!line) continue
    let m
    try {
      m = JSON.parse(line)
    } catch (e) {
      fail(`${file}:${i + 1}: not JSON: ${e.message}`)
    }
    const allowed = ALLOWED_PARAMS[m.type]
    if (!allowed) fail(`${file}:${i + 1}: unknown message type ${JSON.stringify(m.type)}`)
    const params = { messageId: m.messageId }
    for (const k of allowed) if (m[k] !== undefined && m[k] !== null) params[k] = m[k]
    // The SDK sends a timestamp string as given, so the re-sent message carries the same one.
    if (m.timestamp) params.timestamp = m.timestamp
    yield [m.type, params]
  }
}

function messageLine(event) {
  const out = { sdk: 'node', type: event.type, messageId: event.messageId }
  for (const k of PAYLOAD_KEYS) {
    if (k === 'userId' || k === 'anonymousId') out[k] = event[k] ?? null // always present
    else if (event[k] !== undefined && event[k] !== null) out[k] = event[k]
  }
  if (out.timestamp instanceof Date) out.timestamp = out.timestamp.toISOString()
  return out
}

// With --gzip: gzip the JSON body the SDK produced (the SDK has no option for it).
const gzipFetch = (url, init) =>
  globalThis.fetch(url, {
    ...init,
    headers: { ...init.headers, 'Content-Encoding': 'gzip' },
    body: gzipSync(Buffer.from(init.body, 'utf8')),
  })

const analytics = new Analytics({
  writeKey: args['write-key'],
  host: args.host,
  ...(args.path ? { path: args.path } : {}),
  flushAt,
  maxRetries,
  ...(args.gzip ? { httpClient: gzipFetch } : {}),
})

// Delivery failures are reported per message below (from the callbacks); other SDK errors here.
let sdkErrors = 0
analytics.on('error', (err) => {
  if (err?.code === 'delivery_failure') return
  sdkErrors++
  process.stderr.write(`send_node: SDK error ${err?.code}: ${err?.reason?.message ?? err?.reason}\n`)
})
analytics.on('call_after_close', (event) => {
  process.stderr.write(`send_node: SDK dropped a call made after close: ${event?.messageId}\n`)
})

const calls = args['resend-file'] ? resendCalls(args['resend-file']) : generateCalls(args['run-id'], count)
const results = [] // one promise per call, in call order: {line, error}
for (const [kind, params] of calls) {
  results.push(
    new Promise((resolve) => {
      // The callback runs once the message's batch was delivered or given up; ctx.event is the
      // message as the SDK sent it (messageId included), err the delivery failure if any.
      analytics[kind](params, (err, ctx) => resolve({ line: ctx ? messageLine(ctx.event) : null, error: err, params }))
    })
  )
}

await analytics.closeAndFlush({ timeout: timeoutMs })

// closeAndFlush waits for every callback unless it timed out (then the SDK aborts the pending
// batches, which fails them and runs their callbacks); wait a little more for stragglers.
let timer
const outcome = await Promise.race([
  Promise.all(results),
  new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), 5000)
  }),
])
clearTimeout(timer)
if (outcome === null) fail('some SDK callbacks never ran (flush timed out)', 1)

let failed = 0
for (const r of outcome) {
  if (r.error || !r.line) {
    failed++
    process.stderr.write(
      `send_node: delivery failed for ${r.line?.messageId ?? JSON.stringify(r.params)}: ${r.error?.message ?? r.error}\n`
    )
  }
  if (r.line) process.stdout.write(JSON.stringify(r.line) + '\n')
}
process.stderr.write(
  `send_node: @segment/analytics-node ${SDK_VERSION}, ${outcome.length} message(s) to ${args.host}` +
    `${args.gzip ? ' (gzip via custom httpClient)' : ''}, ${failed} failed\n`
)
process.exitCode = failed || sdkErrors ? 1 : 0
