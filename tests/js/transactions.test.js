// kafkajs 2.2.4 transactions against a real sluice (issue 6): a transactional producer
// commits and aborts; a read_committed consumer (kafkajs' default, readUncommitted: false)
// sees exactly the committed messages, a readUncommitted one sees every data record; and
// transaction.sendOffsets makes a group's offsets visible to admin.fetchOffsets on commit
// and never on abort.
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { startBroker, sleep, unique, withLogOf } = require('./broker')
const { kafkaFor } = require('./group_member')

let broker
let kafka
let admin

// Attaches the broker's log to a failing test's error.
const withLog = withLogOf(() => broker)

before(async () => {
  broker = await startBroker(['--num-partitions', '3', '--auto-create-topics-enable', 'true',
    '--set', 'group.initial.rebalance.delay.ms=0'])
  kafka = kafkaFor(broker.bootstrap, 'sluice-kafkajs-txn')
  admin = kafka.admin()
  await admin.connect()
})

after(async () => {
  if (admin) await admin.disconnect()
  if (broker) {
    const exit = await broker.stop()
    assert.deepEqual(exit, { code: 0, signal: null }, 'sluice exits 0 on SIGTERM')
  }
})

function transactionalProducer (transactionalId) {
  return kafka.producer({ transactionalId, idempotent: true, maxInFlightRequests: 1, transactionTimeout: 30000 })
}

// Sends `values` (per partition) inside one transaction and commits or aborts it.
async function inTransaction (producer, topic, values, end) {
  const txn = await producer.transaction()
  try {
    for (const [partition, vs] of Object.entries(values)) {
      await txn.send({ topic, acks: -1, messages: vs.map(value => ({ value, partition: Number(partition) })) })
    }
  } catch (err) {
    await txn.abort()
    throw err
  }
  if (end === 'commit') await txn.commit()
  else await txn.abort()
}

// A group consumer from the beginning: collects { partition: [value, ...] } until `want`
// messages arrived (bounded), then keeps listening a little to catch any extra.
async function consumeAll (topic, want, readUncommitted, timeoutMs = 30000) {
  const consumer = kafka.consumer({ groupId: unique('kjs-txn-read'), readUncommitted, sessionTimeout: 10000, heartbeatInterval: 1000, maxWaitTimeInMs: 500 })
  await consumer.connect()
  const got = {}
  let total = 0
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true })
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        (got[partition] = got[partition] || []).push({ offset: Number(message.offset), value: message.value.toString() })
        total++
      }
    })
    const deadline = Date.now() + timeoutMs
    while (total < want && Date.now() < deadline) await sleep(100)
    await sleep(1500)
  } finally {
    await consumer.disconnect()
  }
  for (const p of Object.keys(got)) {
    const offsets = got[p].map(m => m.offset)
    assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b), `offsets in order on partition ${p}`)
  }
  return Object.fromEntries(Object.entries(got).map(([p, ms]) => [p, ms.map(m => m.value)]))
}

test('commit and abort: read_committed sees exactly the committed messages, readUncommitted all', withLog(async () => {
  const topic = unique('kjs-txn')
  assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }), true)
  const producer = transactionalProducer(unique('kjs-tx'))
  const plain = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  await plain.connect()
  const values = tag => Object.fromEntries([0, 1, 2].map(p => [p, [0, 1, 2].map(i => `${tag}-${p}-${i}`)]))
  const committed = { 0: [], 1: [], 2: [] }
  const all = { 0: [], 1: [], 2: [] }
  const record = (vs, into) => { for (const p of [0, 1, 2]) for (const m of into) m[p].push(...vs[p]) }
  try {
    const c1 = values('c1')
    await inTransaction(producer, topic, c1, 'commit')
    record(c1, [committed, all])

    const p1 = Object.fromEntries([0, 1, 2].map(p => [p, [`plain-${p}`]]))
    for (const p of [0, 1, 2]) await plain.send({ topic, acks: -1, messages: [{ value: p1[p][0], partition: p }] })
    record(p1, [committed, all])

    const a2 = values('a2')
    await inTransaction(producer, topic, a2, 'abort')
    record(a2, [all])

    const c3 = values('c3')
    await inTransaction(producer, topic, c3, 'commit')
    record(c3, [committed, all])
  } finally {
    await producer.disconnect()
    await plain.disconnect()
  }

  // Each partition: 10 data records and one marker per transaction (three).
  const deadline = Date.now() + 10000
  let offsets
  for (;;) {
    offsets = (await admin.fetchTopicOffsets(topic)).map(o => [o.partition, o.high]).sort()
    if (offsets.every(([, high]) => high === '13') || Date.now() > deadline) break
    await sleep(200)
  }
  assert.deepEqual(offsets, [[0, '13'], [1, '13'], [2, '13']])

  const readCommitted = await consumeAll(topic, 21, false)
  assert.deepEqual(readCommitted, { 0: committed[0], 1: committed[1], 2: committed[2] })
  const readUncommitted = await consumeAll(topic, 30, true)
  assert.deepEqual(readUncommitted, { 0: all[0], 1: all[1], 2: all[2] })
}))

async function groupOffsets (groupId, topic) {
  const [res] = await admin.fetchOffsets({ groupId, topics: [topic] })
  return res.partitions.map(p => [p.partition, p.offset]).sort()
}

test('sendOffsets: visible to admin.fetchOffsets after commit, never after abort', withLog(async () => {
  const input = unique('kjs-txo-in')
  const output = unique('kjs-txo-out')
  assert.equal(await admin.createTopics({
    topics: [{ topic: input, numPartitions: 3 }, { topic: output, numPartitions: 1 }],
    waitForLeaders: true
  }), true)
  const groupId = unique('kjs-txo-group')
  const producer = transactionalProducer(unique('kjs-txo'))
  await producer.connect()
  const offsets = (o0, o1) => [{ topic: input, partitions: [{ partition: 0, offset: String(o0) }, { partition: 1, offset: String(o1) }] }]
  const none = [[0, '-1'], [1, '-1'], [2, '-1']]
  try {
    // Aborted: nothing is committed for the group.
    let txn = await producer.transaction()
    await txn.send({ topic: output, messages: [{ value: 'aborted-1', partition: 0 }] })
    await txn.sendOffsets({ consumerGroupId: groupId, topics: offsets(5, 6) })
    assert.deepEqual(await groupOffsets(groupId, input), none, 'visible while the transaction is open')
    await txn.abort()
    await sleep(1000)
    assert.deepEqual(await groupOffsets(groupId, input), none, 'an aborted offset commit became visible')

    // Committed: exactly the sent offsets.
    txn = await producer.transaction()
    await txn.send({ topic: output, messages: [{ value: 'committed', partition: 0 }] })
    await txn.sendOffsets({ consumerGroupId: groupId, topics: offsets(7, 8) })
    await txn.commit()
    const want = [[0, '7'], [1, '8'], [2, '-1']]
    const deadline = Date.now() + 10000
    let got = await groupOffsets(groupId, input)
    while (JSON.stringify(got) !== JSON.stringify(want) && Date.now() < deadline) {
      await sleep(200)
      got = await groupOffsets(groupId, input)
    }
    assert.deepEqual(got, want)

    // Aborted again: the committed offsets stay.
    txn = await producer.transaction()
    await txn.send({ topic: output, messages: [{ value: 'aborted-2', partition: 0 }] })
    await txn.sendOffsets({ consumerGroupId: groupId, topics: offsets(9, 9) })
    await txn.abort()
    await sleep(1000)
    assert.deepEqual(await groupOffsets(groupId, input), want, 'an aborted offset commit replaced committed offsets')
  } finally {
    await producer.disconnect()
  }
  assert.deepEqual(await consumeAll(output, 1, false), { 0: ['committed'] })
}))
