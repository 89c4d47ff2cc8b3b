// Starts the real sluice binary for kafkajs tests: free loopback ports, a temp data dir,
// a bounded wait for /readyz, and stop() (SIGTERM, bounded wait, then SIGKILL).
'use strict'

const { spawn } = require('node:child_process')
const crypto = require('node:crypto')
const fs = require('node:fs')
const http = require('node:http')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')

const READY_TIMEOUT_MS = 30000
const STOP_TIMEOUT_MS = 10000

function sluiceBin () {
  return process.env.SLUICE_BIN || path.resolve(__dirname, '..', '..', 'target', 'debug', 'sluice')
}

function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

function httpGet (addr, urlPath, timeoutMs = 2000) {
  return new Promise((resolve, reject) => {
    const req = http.get(`http://${addr}${urlPath}`, { timeout: timeoutMs }, res => {
      let body = ''
      res.on('data', chunk => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode, body }))
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
  })
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function startBroker (extraArgs = []) {
  const bin = sluiceBin()
  if (!fs.existsSync(bin)) {
    throw new Error(`sluice binary not found at ${bin}: run \`cargo build -p sluice\` (or set SLUICE_BIN)`)
  }
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sluice-kafkajs-'))
  const dataDir = path.join(root, 'data')
  const logPath = path.join(root, 'sluice.log')
  const bootstrap = `127.0.0.1:${await freePort()}`
  const admin = `127.0.0.1:${await freePort()}`
  const args = ['serve', '--data-dir', dataDir, '--listen', bootstrap, '--advertise', bootstrap,
    '--admin-listen', admin, '--node-id', '1', ...extraArgs]
  const logFd = fs.openSync(logPath, 'a')
  const child = spawn(bin, args, { stdio: ['ignore', logFd, logFd], env: { ...process.env, NO_COLOR: '1' } })
  fs.closeSync(logFd)
  let exited = null
  child.on('exit', (code, signal) => { exited = { code, signal } })

  const log = () => `----- sluice log ${logPath} -----\n${fs.readFileSync(logPath, 'utf8')}\n----- end of log -----`
  const deadline = Date.now() + READY_TIMEOUT_MS
  for (;;) {
    if (exited) throw new Error(`sluice exited early (${JSON.stringify(exited)})\n${log()}`)
    try {
      if ((await httpGet(admin, '/readyz')).status === 200) break
    } catch (_) { /* not listening yet */ }
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`sluice not ready within ${READY_TIMEOUT_MS} ms\n${log()}`)
    }
    await sleep(100)
  }

  async function stop () {
    if (exited) return exited
    child.kill('SIGTERM')
    const until = Date.now() + STOP_TIMEOUT_MS
    while (!exited && Date.now() < until) await sleep(50)
    if (!exited) {
      child.kill('SIGKILL')
      while (!exited) await sleep(50)
      throw new Error(`sluice did not exit within ${STOP_TIMEOUT_MS} ms of SIGTERM`)
    }
    fs.rmSync(root, { recursive: true, force: true })
    return exited
  }

  return { bootstrap, admin, dataDir, log, stop }
}

// A name no other test or run uses.
const unique = prefix => `${prefix}-${crypto.randomBytes(5).toString('hex')}`

// Wraps a test so that a failure carries the tail of the broker's log; `getBroker` returns
// the suite's broker (undefined before it started).
const withLogOf = getBroker => fn => async t => {
  try {
    await fn(t)
  } catch (err) {
    const broker = getBroker()
    err.message += `\n${broker ? broker.log().slice(-20000) : '(no broker)'}`
    throw err
  }
}

module.exports = { startBroker, httpGet, sleep, unique, withLogOf }
