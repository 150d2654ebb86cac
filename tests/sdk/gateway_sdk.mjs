// coppiced end to end through the unmodified E2B JS SDK: control plane and sandbox traffic.
//
// Needs E2B_API_KEY, E2B_API_URL and E2B_SANDBOX_URL pointing at coppiced. Prints one
// PASS/FAIL line per check and exits 1 if any check failed.
import { randomUUID } from 'node:crypto'
import {
  AuthenticationError, CommandExitError, NotFoundError, Sandbox,
} from 'e2b'
import { check, finish, step } from './checks.mjs'

const RUN = randomUUID().slice(0, 8)

async function expectError(name, fn, type) {
  try {
    await fn()
    check(name, false, 'no error')
  } catch (e) {
    check(name, e instanceof type, `${e?.name}: ${e?.message}`)
  }
}

const sbx = await Sandbox.create({ envs: { SBX_ENV: 'a' }, metadata: { suite: RUN }, timeoutMs: 300_000 })
check('create returns an id', Boolean(sbx.sandboxId))
const r = await step('run', () => sbx.commands.run('echo hello; whoami; echo $SBX_ENV'))
check('commands through the gateway (end-stream present)', r?.stdout === 'hello\nuser\na\n', JSON.stringify(r))
await expectError('non-zero exit raises CommandExitError', () => sbx.commands.run('exit 3'), CommandExitError)
const root = await step('root', () => sbx.commands.run('whoami', { user: 'root' }))
check('user root', root?.stdout === 'root\n', JSON.stringify(root))

await step('write', () => sbx.files.write('/home/user/js.txt', 'from js'))
check('files round trip (chunked multipart)', (await step('read', () => sbx.files.read('/home/user/js.txt'))) === 'from js')
check('exists false for a missing file', (await step('exists', () => sbx.files.exists('/home/user/nope'))) === false)

const h = await sbx.commands.run('sleep 0.5; echo later; exit 4', { background: true, timeoutMs: 0 })
await h.disconnect()
const again = await step('connect by pid', () => sbx.commands.connect(h.pid))
try {
  await again.wait()
  check('background + reconnect', false, 'no error')
} catch (e) {
  check('background + reconnect', e instanceof CommandExitError && e.exitCode === 4 && e.stdout.includes('later'), String(e))
}

let out = ''
const decoder = new TextDecoder()
const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (data) => { out += decoder.decode(data) } })
await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('echo pty-$((40+2)); exit\n'))
await step('pty wait', () => pty.wait())
check('pty', out.includes('pty-42'), out.slice(-200))

const info = await step('getInfo', () => sbx.getInfo())
check('getInfo', info?.sandboxId === sbx.sandboxId && info?.metadata?.suite === RUN, JSON.stringify(info))
await step('setTimeout', () => sbx.setTimeout(600_000))
const after = await step('getInfo after setTimeout', () => sbx.getInfo())
const left = after ? (new Date(after.endAt).getTime() - Date.now()) / 1000 : 0
check('setTimeout moves endAt', left > 500 && left <= 605, String(left))

const others = [await Sandbox.create({ metadata: { suite: RUN } }), await Sandbox.create({ metadata: { suite: RUN } })]
const paginator = Sandbox.list({ query: { metadata: { suite: RUN } }, limit: 2 })
const first = (await step('list page 1', () => paginator.nextItems())) ?? []
check('list by metadata, first page of 2', first.length === 2 && paginator.hasNext, JSON.stringify(first))
const second = (await step('list page 2', () => paginator.nextItems())) ?? []
const ids = [...first, ...second].map((s) => s.sandboxId).sort()
const want = [sbx.sandboxId, ...others.map((o) => o.sandboxId)].sort()
check('list pages cover every sandbox', JSON.stringify(ids) === JSON.stringify(want), JSON.stringify(ids))
for (const other of others) await other.kill()

const connected = await step('connect', () => Sandbox.connect(sbx.sandboxId))
const c = await step('run after connect', () => connected.commands.run('echo c'))
check('connect to a live sandbox', c?.stdout === 'c\n')

await step('write before pause', () => connected.files.write('/home/user/paused.txt', 'kept'))
check('pause', (await step('pause', () => connected.pause())) === true)
check('pause again -> false', (await step('pause again', () => connected.pause())) === false)
const pausedInfo = await step('info while paused', () => Sandbox.getInfo(sbx.sandboxId))
check('state paused', pausedInfo?.state === 'paused', JSON.stringify(pausedInfo))
const woken = await step('resume by connect', () => Sandbox.connect(sbx.sandboxId))
const kept = await step('read after resume', () => woken.files.read('/home/user/paused.txt'))
check('files kept across pause', kept === 'kept', String(kept))

await expectError('unknown sandbox raises NotFoundError', () => Sandbox.getInfo('nosuchsandbox0000000'), NotFoundError)
await expectError('wrong key raises AuthenticationError', () => Sandbox.list({ apiKey: 'wrong-key' }).nextItems(), AuthenticationError)

const killed = await step('kill', async () => { await sbx.kill(); return true })
check('kill', killed === true)
check('kill again -> false', (await step('kill again', () => Sandbox.kill(sbx.sandboxId))) === false)
check('isRunning after kill -> false', (await step('isRunning', () => sbx.isRunning())) === false)

finish()
