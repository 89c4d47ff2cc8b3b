// One kafkajs consumer-group member for groups.test.js: in the test's own process
// (startMember), or as a child process the test can SIGKILL (`node group_member.js` with
// its options as JSON in SLUICE_MEMBER; events go to stdout, one per line).
//
// Events, as in tests/python/group_member.py:
//   A <ms> <p,p,...>          the member's assignment after a rebalance (GROUP_JOIN)
//   M <partition> <offset> <seq> <ok>   a message; ok is 1 when key and value are exact
//   C <partition> <offset>    a committed offset (the next one to read)
//   E <text>                  an error
// Every message is committed (autoCommit off, commitOffsets) right after it is recorded.
'use strict'

const crypto = require('node:crypto')
const { Kafka, logLevel } = require('kafkajs')

const KEYS = 60
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

// Message `seq`: 60 keys; a value that starts with the sequence number and goes on with
// 1-240 bytes derived from it (all byte values occur).
function message (seq) {
  const key = Buffer.from(`key-${String(seq % KEYS).padStart(3, '0')}`)
  const size = 1 + (seq * 37) % 240
  const chunks = []
  let block = crypto.createHash('sha256').update(`seq-${seq}`).digest()
  let have = 0
  while (have < size) {
    chunks.push(block)
    have += block.length
    block = crypto.createHash('sha256').update(block).digest()
  }
  const value = Buffer.concat([Buffer.from(`${seq}|`), Buffer.concat(chunks).subarray(0, size)])
  return { key, value }
}

function check (key, value) {
  const bar = value ? value.indexOf(0x7c) : -1
  if (bar < 1) return { seq: -1, ok: 0 }
  const seq = Number(value.subarray(0, bar).toString())
  const want = message(seq)
  return { seq, ok: key && want.key.equals(key) && want.value.equals(value) ? 1 : 0 }
}

function kafkaFor (bootstrap, clientId) {
  return new Kafka({
    clientId,
    brokers: [bootstrap],
    logLevel: logLevel.NOTHING,
    connectionTimeout: 5000,
    requestTimeout: 15000,
    retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 2000 }
  })
}

// Starts a member; onEvent gets each event line. Returns { consumer, stop }.
async function startMember ({ bootstrap, group, topic, name, sessionMs = 6000, sleepMs = 0 }, onEvent) {
  const consumer = kafkaFor(bootstrap, `member-${name}`).consumer({
    groupId: group,
    sessionTimeout: sessionMs,
    rebalanceTimeout: 20000,
    heartbeatInterval: Math.max(500, Math.floor(sessionMs / 6)),
    maxBytesPerPartition: 4096,
    maxWaitTimeInMs: 100,
    retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 2000 }
  })
  consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
    const parts = (payload.memberAssignment[topic] || []).slice().sort((a, b) => a - b)
    onEvent(`A ${Date.now()} ${parts.join(',') || '-'}`)
  })
  consumer.on(consumer.events.CRASH, ({ payload }) => onEvent(`E crash ${payload.error && payload.error.message}`))
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message: m }) => {
      const { seq, ok } = check(m.key, m.value)
      onEvent(`M ${partition} ${m.offset} ${seq} ${ok}`)
      const next = String(Number(m.offset) + 1)
      await consumer.commitOffsets([{ topic, partition, offset: next }])
      onEvent(`C ${partition} ${next}`)
      if (sleepMs) await sleep(sleepMs)
    }
  })
  return { consumer, stop: () => consumer.disconnect() }
}

module.exports = { message, check, kafkaFor, startMember, KEYS }

if (require.main === module) {
  const opts = JSON.parse(process.env.SLUICE_MEMBER)
  const out = line => process.stdout.write(line + '\n')
  startMember(opts, out).then(member => {
    process.on('SIGTERM', () => member.stop().then(() => { out('X'); process.exit(0) }))
  }, err => {
    out(`E start ${err.message}`)
    process.exit(1)
  })
}
