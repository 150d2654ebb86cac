// coppice's code interpreter driven by the unmodified @e2b/code-interpreter JS SDK:
// `Sandbox.create()` asks for the `code-interpreter-v1` template, reached on port 49999
// through the gateway. Prints one PASS/FAIL line per check and exits 1 if any failed.
import { Sandbox as CodeInterpreter } from '@e2b/code-interpreter'
import { NotFoundError } from 'e2b'
import { check, finish, step } from './checks.mjs'

const ci = await CodeInterpreter.create({ timeoutMs: 300_000 })
try {
  await step('x = 1', () => ci.runCode('x = 1'))
  const two = await step('x + 1', () => ci.runCode('x + 1'))
  check('state persists: x + 1 is 2', two?.text === '2', JSON.stringify(two))
  const printed = await step('print', () => ci.runCode("print('hello')"))
  check('print is captured as stdout', printed?.logs.stdout.join('') === 'hello\n', JSON.stringify(printed?.logs))
  const failed = await step('1/0', () => ci.runCode('1/0'))
  check('1/0 is a ZeroDivisionError', failed?.error?.name === 'ZeroDivisionError', JSON.stringify(failed?.error))
  check('with a traceback', Boolean(failed?.error?.traceback.includes('ZeroDivisionError')))

  const context = await step('create context', () => ci.createCodeContext())
  if (context) {
    const fresh = await step('x in a new context', () => ci.runCode('x', { context }))
    check('a new context has separate state', fresh?.error?.name === 'NameError', JSON.stringify(fresh))
    await step('restart', () => ci.restartCodeContext(context))
    await step('remove', () => ci.removeCodeContext(context))
    try {
      await ci.runCode('1', { context })
      check('a removed context is not found', false, 'it still ran')
    } catch (e) {
      check('a removed context is not found', e instanceof NotFoundError, `${e?.name}: ${e?.message}`)
    }
  }
  const withEnv = await step('env var', () => ci.runCode("import os; os.environ.get('ONLY_HERE')", { envs: { ONLY_HERE: 'yes' } }))
  check("an execution's env vars are visible to it", withEnv?.text === 'yes', JSON.stringify(withEnv))
  const without = await step('env var after', () => ci.runCode("import os; os.environ.get('ONLY_HERE')"))
  check('and only to it', without !== undefined && without.text === undefined, JSON.stringify(without))
  const js = await step('javascript', () => ci.runCode('const a = 40; a + 2', { language: 'javascript' }))
  check('a JavaScript execution works', js?.text === '42', JSON.stringify(js))
} finally {
  await step('kill', () => ci.kill())
}
finish()
