// kafkajs 2.2.4 consumer groups against a real sluice (group.initial.rebalance.delay.ms=0):
// three consumers in this process share a 6-partition topic's keyed messages exactly once;
// a member running in a child process is SIGKILLed and its partitions move to the others
// within the session timeout with nothing lost; a new member joins mid-stream; admin
// lists, describes, fetches offsets of and deletes groups; a fresh consumer's
// join-to-first-message time is measured; a group's committed offsets survive a broker
// restart (SIGKILL and SIGTERM) and new consumers resume exactly there.
//
// The restart tests start a broker of their own (restartableBroker below): broker.js's
// brokers cannot be restarted on the same data dir.
//
// kafkajs is slower than librdkafka and commits every message here, so the runs use 6,000
// messages (4,500 for the failure scenarios) instead of the 30,000. kafkajs has no
// static membership (group.instance.id), so that scenario is covered by the Python tests.
'use strict'

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { AssignerProtocol } = require('kafkajs')
const { startBroker, httpGet, sleep, unique, withLogOf } = require('./broker')
const { message, check, kafkaFor, startMember, KEYS } = require('./group_member')

const PARTITIONS = 6
const SESSION_MS = 6000
const N_EXACT = 6000
const N_FAILURE = 4500

let broker
let kafka
let admin

// Attaches the broker's log to a failing test's error.
const withLog = withLogOf(() => broker)

before(async () => {
  broker = await startBroker(['--num-partitions', '3', '--auto-create-topics-enable', 'true',
    '--set', 'group.initial.rebalance.delay.ms=0'])
  kafka = kafkaFor(broker.bootstrap, 'sluice-kafkajs-groups')
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

async function newTopic (prefix) {
  const topic = unique(prefix)
  assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true }), true)
  return topic
}

// Produces message(seq) for each seq, keyed (kafkajs' default Java-compatible partitioner).
async function produce (topic, from, to) {
  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  try {
    for (let start = from; start < to; start += 500) {
      const messages = []
      for (let seq = start; seq < Math.min(to, start + 500); seq++) messages.push(message(seq))
      await producer.send({ topic, acks: -1, messages })
    }
  } finally {
    await producer.disconnect()
  }
  const ends = {}
  for (const { partition, high } of await admin.fetchTopicOffsets(topic)) ends[partition] = Number(high)
  return ends
}

// Parsed events of one member.
class Log {
  constructor (name) { this.name = name; this.lines = []; this.dead = false }
  push (line) { this.lines.push(line) }
  msgs () {
    return this.lines.filter(l => l[0] === 'M').map(l => {
      const [, p, o, seq, ok] = l.split(' ')
      return { p: Number(p), o: Number(o), seq: Number(seq), ok: Number(ok) }
    })
  }

  commits () {
    return this.lines.filter(l => l[0] === 'C').map(l => l.split(' ').slice(1).map(Number))
  }

  assigns () {
    return this.lines.filter(l => l[0] === 'A').map(l => {
      const [, ts, ps] = l.split(' ')
      return { ts: Number(ts), parts: ps === '-' ? [] : ps.split(',').map(Number) }
    })
  }

  assignment () {
    const a = this.assigns()
    return a.length ? a[a.length - 1].parts : []
  }

  errors () { return this.lines.filter(l => l[0] === 'E') }
}

class Group {
  constructor (topic) {
    this.topic = topic
    this.group = unique('grp-kafkajs')
    this.logs = {}
    this.members = {}
  }

  async add (name, opts = {}) {
    const log = this.logs[name] = new Log(name)
    this.members[name] = await startMember({ bootstrap: broker.bootstrap, group: this.group,
      topic: this.topic, name, sessionMs: SESSION_MS, ...opts }, line => log.push(line))
  }

  // A member in a child process, so that it can be SIGKILLed.
  addChild (name, opts = {}) {
    const log = this.logs[name] = new Log(name)
    const child = spawn(process.execPath, [path.join(__dirname, 'group_member.js')], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, SLUICE_MEMBER: JSON.stringify({ bootstrap: broker.bootstrap, group: this.group, topic: this.topic, name, sessionMs: SESSION_MS, ...opts }) }
    })
    let rest = ''
    child.stdout.on('data', chunk => {
      const parts = (rest + chunk.toString()).split('\n')
      rest = parts.pop()
      for (const line of parts) log.push(line)
    })
    child.on('exit', () => { log.dead = true })
    this.members[name] = { child, stop: async () => { child.kill('SIGTERM') } }
  }

  seen () {
    const s = new Set()
    for (const log of Object.values(this.logs)) for (const m of log.msgs()) s.add(m.seq)
    return s
  }

  balanced (names) {
    const sets = names.map(n => this.logs[n].assignment())
    if (sets.some(s => s.length === 0)) return false
    const all = sets.flat()
    const sizes = sets.map(s => s.length)
    return all.length === PARTITIONS && new Set(all).size === PARTITIONS &&
      Math.max(...sizes) - Math.min(...sizes) <= 1
  }

  summary () {
    return Object.values(this.logs).map(l => `${l.name}: assignment=${l.assignment()} messages=${l.msgs().length} errors=${l.errors().slice(0, 3)}`).join('\n')
  }

  async waitFor (pred, timeoutMs, what) {
    const deadline = Date.now() + timeoutMs
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}\n${this.summary()}`)
      await sleep(100)
    }
    return Date.now()
  }

  async stopAll () {
    await Promise.all(Object.values(this.members).map(m => m.stop()))
  }
}

// Every message byte-exact; each seq seen; per-key order and one partition per key; every
// offset below the partition ends consumed; exactly once if asked.
function checkMessages (logs, seqs, ends, exactlyOnce) {
  const count = new Map()
  const keyPartition = new Map()
  const byPartition = new Map()
  for (const log of logs) {
    const lastOffset = new Map()
    const lastSeqOfKey = new Map()
    for (const m of log.msgs()) {
      assert.equal(m.ok, 1, `${log.name}: message at ${m.p}/${m.o} (seq ${m.seq}) is not byte-exact`)
      count.set(m.seq, (count.get(m.seq) || 0) + 1)
      const key = m.seq % KEYS
      if (keyPartition.has(key)) assert.equal(keyPartition.get(key), m.p, `key ${key} on two partitions`)
      keyPartition.set(key, m.p)
      if (!byPartition.has(m.p)) byPartition.set(m.p, new Map())
      const prev = byPartition.get(m.p).get(m.o)
      assert.ok(prev === undefined || prev === m.seq, `${m.p}/${m.o} held seq ${prev} and ${m.seq}`)
      byPartition.get(m.p).set(m.o, m.seq)
      if (exactlyOnce) {
        assert.ok(m.o > (lastOffset.has(m.p) ? lastOffset.get(m.p) : -1), `${log.name}: partition ${m.p} went back`)
        lastOffset.set(m.p, m.o)
        assert.ok(m.seq > (lastSeqOfKey.has(key) ? lastSeqOfKey.get(key) : -1), `${log.name}: key ${key} out of order`)
        lastSeqOfKey.set(key, m.seq)
      }
    }
  }
  const missing = seqs.filter(s => !count.has(s))
  assert.deepEqual(missing.slice(0, 10), [], `${missing.length} messages never consumed`)
  assert.equal(count.size, seqs.length, 'consumed messages that were not produced')
  if (exactlyOnce) {
    const dups = [...count].filter(([, c]) => c > 1)
    assert.deepEqual(dups.slice(0, 5), [], `${dups.length} messages consumed more than once`)
  }
  // Offsets 0..end-1 of every partition, and per-key order in the log.
  for (let p = 0; p < PARTITIONS; p++) {
    const offsets = byPartition.get(p) || new Map()
    assert.equal(offsets.size, ends[p], `partition ${p}: consumed ${offsets.size} distinct offsets of ${ends[p]}`)
    const lastSeq = new Map()
    for (let o = 0; o < ends[p]; o++) {
      const seq = offsets.get(o)
      assert.ok(seq !== undefined, `partition ${p} offset ${o} never consumed`)
      assert.ok(seq > (lastSeq.has(seq % KEYS) ? lastSeq.get(seq % KEYS) : -1), `key ${seq % KEYS} out of order in the log`)
      lastSeq.set(seq % KEYS, seq)
    }
  }
  return [...count.values()].reduce((a, b) => a + b, 0)
}

async function committed (group, topic) {
  const [res] = await admin.fetchOffsets({ groupId: group, topics: [topic] })
  const out = {}
  for (const { partition, offset } of res.partitions) out[partition] = Number(offset)
  return out
}

const range = (from, to) => Array.from({ length: to - from }, (_, i) => from + i)

test('three consumers share every message exactly once', withLog(async () => {
  const topic = await newTopic('g3-kafkajs')
  const g = new Group(topic)
  try {
    for (const n of ['m0', 'm1', 'm2']) await g.add(n)
    await g.waitFor(() => g.balanced(['m0', 'm1', 'm2']), 30000, 'three members balanced')
    const held = Object.fromEntries(['m0', 'm1', 'm2'].map(n => [n, g.logs[n].assignment()]))
    const began = Date.now()
    const ends = await produce(topic, 0, N_EXACT)
    assert.ok(Object.values(ends).every(e => e > 0), `keys did not reach every partition: ${JSON.stringify(ends)}`)
    await g.waitFor(() => g.seen().size === N_EXACT, 120000, `all ${N_EXACT} consumed`)
    console.log(`kafkajs: ${N_EXACT} messages produced and consumed by 3 members in ${((Date.now() - began) / 1000).toFixed(1)}s`)
    await g.stopAll()
    assert.equal(checkMessages(Object.values(g.logs), range(0, N_EXACT), ends, true), N_EXACT)
    for (const [n, log] of Object.entries(g.logs)) {
      assert.ok(log.msgs().length > 0, `${n} consumed nothing`)
      assert.ok(log.msgs().every(m => held[n].includes(m.p)), `${n} read partitions it did not hold`)
    }
    assert.deepEqual(await committed(g.group, topic), ends)
  } finally {
    await g.stopAll().catch(() => {})
  }
}))

test('a SIGKILLed member\'s partitions move to the others, nothing lost', withLog(async () => {
  const topic = await newTopic('gkill-kafkajs')
  const g = new Group(topic)
  try {
    g.addChild('m0', { sleepMs: 2 })
    await g.waitFor(() => g.logs.m0.assignment().length === PARTITIONS, 30000, 'm0 joined')
    for (const n of ['m1', 'm2']) await g.add(n, { sleepMs: 2 })
    await g.waitFor(() => g.balanced(['m0', 'm1', 'm2']), 30000, 'three members balanced')
    const ends = await produce(topic, 0, N_FAILURE)
    await g.waitFor(() => g.logs.m0.msgs().length >= 200, 60000, 'm0 consumed 200 messages')
    const victimParts = g.logs.m0.assignment()
    g.members.m0.child.kill('SIGKILL')
    const killedAt = Date.now()
    await g.waitFor(() => g.logs.m0.dead, 10000, 'm0 exited')
    const dead = { msgs: g.logs.m0.msgs(), commits: g.logs.m0.commits() }

    await g.waitFor(() => g.balanced(['m1', 'm2']), SESSION_MS + 15000, 'm1, m2 hold all partitions')
    const movedAt = Math.max(...['m1', 'm2'].map(n => g.logs[n].assigns().slice(-1)[0].ts))
    console.log(`kafkajs: partitions of the killed member reassigned ${((movedAt - killedAt) / 1000).toFixed(1)}s after SIGKILL (sessionTimeout ${SESSION_MS})`)
    await g.waitFor(() => g.seen().size === N_FAILURE, 90000, `all ${N_FAILURE} consumed`)
    await g.members.m1.stop()
    await g.members.m2.stop()
    const total = checkMessages(Object.values(g.logs), range(0, N_FAILURE), ends, false)
    console.log(`kafkajs: ${total} deliveries for ${N_FAILURE} messages with a member killed`)
    for (const p of victimParts) {
      const lastCommit = Math.max(0, ...dead.commits.filter(([q]) => q === p).map(([, o]) => o))
      const lastSeen = Math.max(-1, ...dead.msgs.filter(m => m.p === p).map(m => m.o))
      const after = ['m1', 'm2'].flatMap(n => g.logs[n].msgs().filter(m => m.p === p).map(m => m.o))
      if (lastSeen + 1 >= ends[p] && after.length === 0) continue
      assert.ok(after.length > 0, `nobody consumed partition ${p} after m0 died`)
      const first = Math.min(...after)
      assert.ok(lastCommit <= first && first <= lastSeen + 1,
        `partition ${p}: resumed at ${first}, m0 committed ${lastCommit} and saw up to ${lastSeen}`)
    }
    assert.deepEqual(await committed(g.group, topic), ends)
  } finally {
    if (g.members.m0) g.members.m0.child.kill('SIGKILL')
    await Promise.all(['m1', 'm2'].filter(n => g.members[n]).map(n => g.members[n].stop().catch(() => {})))
  }
}))

test('a new member joins mid-stream and consumption continues', withLog(async () => {
  const topic = await newTopic('gjoin-kafkajs')
  const g = new Group(topic)
  try {
    for (const n of ['m0', 'm1']) await g.add(n, { sleepMs: 2 })
    await g.waitFor(() => g.balanced(['m0', 'm1']), 30000, 'two members balanced')
    await produce(topic, 0, N_FAILURE)
    await g.waitFor(() => g.seen().size >= N_FAILURE / 8, 60000, 'some messages consumed')
    const joined = Date.now()
    await g.add('m2', { sleepMs: 2 })
    await g.waitFor(() => g.balanced(['m0', 'm1', 'm2']), 30000, 'three members balanced')
    console.log(`kafkajs: rebalance with a third member done in ${((Date.now() - joined) / 1000).toFixed(1)}s`)
    const left = N_FAILURE - g.seen().size
    // A second wave after the rebalance reaches the newcomer's partitions too (those of
    // the first wave may have been drained before it got them).
    const total = N_FAILURE + N_FAILURE / 2
    const allEnds = await produce(topic, N_FAILURE, total)
    await g.waitFor(() => g.seen().size === total, 90000, `all ${total} consumed`)
    await g.stopAll()
    const deliveries = checkMessages(Object.values(g.logs), range(0, total), allEnds, false)
    assert.ok(left > 0, 'everything was consumed before the new member joined')
    assert.ok(g.logs.m2.msgs().some(m => m.seq >= N_FAILURE), 'the new member consumed nothing')
    console.log(`kafkajs: ${deliveries} deliveries for ${total} messages with a member joining`)
    assert.deepEqual(await committed(g.group, topic), allEnds)
  } finally {
    await g.stopAll().catch(() => {})
  }
}))

test('admin lists, describes, fetches offsets of and deletes groups', withLog(async () => {
  const topic = await newTopic('gadmin-kafkajs')
  const g = new Group(topic)
  try {
    for (const n of ['m0', 'm1']) await g.add(n)
    await g.waitFor(() => g.balanced(['m0', 'm1']), 30000, 'two members balanced')
    const ends = await produce(topic, 0, 600)
    await g.waitFor(() => g.seen().size === 600, 60000, 'all 600 consumed')
    // The last message's commit follows its consumption: wait (bounded) for it.
    for (const until = Date.now() + 30000; ;) {
      if (JSON.stringify(await committed(g.group, topic)) === JSON.stringify(ends)) break
      if (Date.now() > until) assert.fail(`committed ${JSON.stringify(await committed(g.group, topic))} != ends ${JSON.stringify(ends)}`)
      await sleep(100)
    }

    const { groups } = await admin.listGroups()
    assert.ok(groups.some(x => x.groupId === g.group && x.protocolType === 'consumer'), 'listGroups')
    const { groups: [desc] } = await admin.describeGroups([g.group])
    assert.equal(desc.errorCode, 0)
    assert.equal(desc.state, 'Stable')
    assert.equal(desc.protocolType, 'consumer')
    assert.equal(desc.protocol, 'RoundRobinAssigner')
    assert.equal(desc.members.length, 2)
    const described = {}
    for (const m of desc.members) {
      const a = AssignerProtocol.MemberAssignment.decode(m.memberAssignment)
      described[m.clientId] = (a.assignment[topic] || []).slice().sort((x, y) => x - y)
      assert.deepEqual(AssignerProtocol.MemberMetadata.decode(m.memberMetadata).topics, [topic])
    }
    assert.deepEqual(described, { 'member-m0': g.logs.m0.assignment(), 'member-m1': g.logs.m1.assignment() })
    assert.deepEqual(await committed(g.group, topic), ends)

    await assert.rejects(admin.deleteGroups([g.group]), err => {
      assert.equal(err.groups[0].errorCode, 68, `NON_EMPTY_GROUP, got ${err.groups[0].errorCode}`)
      return true
    })
    await g.stopAll()
    const { groups: [empty] } = await admin.describeGroups([g.group])
    assert.equal(empty.state, 'Empty')
    assert.deepEqual(empty.members, [])
    const res = await admin.deleteGroups([g.group])
    assert.deepEqual(res.map(r => [r.groupId, r.errorCode]), [[g.group, 0]])
    const after = (await admin.listGroups()).groups.map(x => x.groupId)
    assert.ok(!after.includes(g.group), 'deleted group still listed')
    assert.deepEqual(await committed(g.group, topic), Object.fromEntries(range(0, PARTITIONS).map(p => [p, -1])))
  } finally {
    await g.stopAll().catch(() => {})
  }
}))

test('time from join to first message', withLog(async () => {
  const topic = await newTopic('gfirst-kafkajs')
  await produce(topic, 0, 60)
  const times = []
  for (let i = 0; i < 3; i++) {
    const began = Date.now()
    const consumer = kafka.consumer({ groupId: unique('first'), maxWaitTimeInMs: 100 })
    let first
    const got = new Promise(resolve => { first = resolve })
    try {
      await consumer.connect()
      await consumer.subscribe({ topics: [topic], fromBeginning: true })
      await consumer.run({ eachMessage: async ({ message: m }) => first(m) })
      const m = await Promise.race([got, sleep(10000).then(() => null)])
      const elapsed = Date.now() - began
      assert.ok(m, 'no message within 10 s of subscribing')
      assert.equal(check(m.key, m.value).ok, 1, 'first message not byte-exact')
      times.push(elapsed)
    } finally {
      await consumer.disconnect()
    }
  }
  const sorted = times.slice().sort((a, b) => a - b)
  console.log(`kafkajs: join-to-first-message ${times.join(', ')} ms (median ${sorted[1]} ms, includes connect)`)
  assert.ok(Math.max(...times) < 10000)
}))

// A sluice on fixed ports and data dir that can be killed and started again.
async function restartableBroker () {
  const port = () => new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => { const p = srv.address().port; srv.close(() => resolve(p)) })
  })
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-kafkajs-restart-'))
  const bootstrap = `127.0.0.1:${await port()}`
  const adminAddr = `127.0.0.1:${await port()}`
  const logPath = path.join(root, 'sluice.log')
  const bin = process.env.SLUICE_BIN || path.resolve(__dirname, '..', '..', 'target', 'debug', 'sluice')
  const args = ['serve', '--data-dir', path.join(root, 'data'), '--listen', bootstrap, '--advertise', bootstrap,
    '--admin-listen', adminAddr, '--node-id', '1', '--num-partitions', '3',
    '--set', 'group.initial.rebalance.delay.ms=0']
  let child = null
  let exited = null
  const b = {
    bootstrap,
    log: () => fs.readFileSync(logPath, 'utf8'),
    async start () {
      const fd = fs.openSync(logPath, 'a')
      exited = null
      child = spawn(bin, args, { stdio: ['ignore', fd, fd], env: { ...process.env, NO_COLOR: '1' } })
      fs.closeSync(fd)
      child.on('exit', (code, signal) => { exited = { code, signal } })
      const deadline = Date.now() + 30000
      for (;;) {
        if (exited) throw new Error(`sluice exited early ${JSON.stringify(exited)}`)
        try { if ((await httpGet(adminAddr, '/readyz')).status === 200) return } catch (_) {}
        if (Date.now() > deadline) throw new Error('sluice not ready within 30 s')
        await sleep(100)
      }
    },
    async stop (signal) {
      if (!child || exited) return exited
      child.kill(signal)
      const deadline = Date.now() + 10000
      while (!exited && Date.now() < deadline) await sleep(50)
      if (!exited) {
        child.kill('SIGKILL')
        while (!exited) await sleep(50)
        throw new Error(`sluice did not exit within 10 s of ${signal}`)
      }
      return exited
    },
    remove () { fs.rmSync(root, { recursive: true, force: true }) }
  }
  await b.start()
  return b
}

for (const signal of ['SIGKILL', 'SIGTERM']) {
  test(`committed offsets survive a broker restart (${signal}); consumers resume there`, async () => {
    const own = await restartableBroker()
    const ownKafka = kafkaFor(own.bootstrap, 'sluice-kafkajs-restart')
    const ownAdmin = ownKafka.admin()
    const members = []
    try {
      await ownAdmin.connect()
      const topic = unique('grestart-kafkajs')
      assert.equal(await ownAdmin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true }), true)
      const group = unique('grp-kafkajs-restart')
      const ends = async () => Object.fromEntries((await ownAdmin.fetchTopicOffsets(topic)).map(o => [o.partition, Number(o.high)]))
      const fetch = async () => Object.fromEntries((await ownAdmin.fetchOffsets({ groupId: group, topics: [topic] }))[0].partitions.map(p => [p.partition, Number(p.offset)]))
      const send = async (from, to) => {
        const producer = ownKafka.producer()
        await producer.connect()
        const messages = []
        for (let seq = from; seq < to; seq++) messages.push(message(seq))
        await producer.send({ topic, acks: -1, messages })
        await producer.disconnect()
      }
      const phase = async (tag, want) => {
        const logs = ['a', 'b', 'c'].map(n => new Log(`${tag}${n}`))
        for (const log of logs) {
          members.push(await startMember({ bootstrap: own.bootstrap, group, topic, name: log.name }, line => log.push(line)))
        }
        const deadline = Date.now() + 60000
        const seen = () => new Set(logs.flatMap(l => l.msgs().map(m => m.seq)))
        while (![...want].every(s => seen().has(s))) {
          if (Date.now() > deadline) throw new Error(`${tag}: consumed ${seen().size} of ${want.size}`)
          await sleep(100)
        }
        while (members.length) await members.pop().stop()
        return logs
      }

      await send(0, 3000)
      const first = await phase('p1-', new Set(range(0, 3000)))
      const endsBefore = await ends()
      checkMessages(first, range(0, 3000), endsBefore, false)
      const committedBefore = await fetch()
      assert.deepEqual(committedBefore, endsBefore)
      await send(3000, 4500)

      await ownAdmin.disconnect()
      const exit = await own.stop(signal)
      if (signal === 'SIGTERM') assert.deepEqual(exit, { code: 0, signal: null })
      await own.start()
      await ownAdmin.connect()
      assert.deepEqual(await fetch(), committedBefore, 'committed offsets changed across the restart')

      const second = await phase('p2-', new Set(range(3000, 4500)))
      const msgs = second.flatMap(l => l.msgs())
      assert.deepEqual(msgs.filter(m => m.seq < 3000).slice(0, 5), [], 're-delivered from before the committed offset')
      assert.ok(msgs.every(m => m.ok === 1), 'not byte-exact')
      for (let p = 0; p < PARTITIONS; p++) {
        const offsets = msgs.filter(m => m.p === p).map(m => m.o)
        const endNow = (await ends())[p]
        if (endNow > committedBefore[p]) {
          assert.equal(Math.min(...offsets), committedBefore[p], `partition ${p} resumed elsewhere than its committed offset`)
        } else {
          assert.equal(offsets.length, 0)
        }
      }
      assert.deepEqual(await fetch(), await ends())
      console.log(`kafkajs (${signal}): resumed at the committed offsets, ${msgs.length} deliveries for 1500 messages`)
    } catch (err) {
      err.message += `\n${own.log().slice(-20000)}`
      throw err
    } finally {
      while (members.length) await members.pop().stop().catch(() => {})
      await ownAdmin.disconnect().catch(() => {})
      await own.stop('SIGTERM').catch(() => {})
      own.remove()
    }
  })
}
