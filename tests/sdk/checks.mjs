// PASS/FAIL bookkeeping shared by the JS SDK suites.
const FAILS = []

export function check(name, cond, detail = '') {
  console.log((cond ? 'PASS ' : 'FAIL ') + name + (cond ? '' : `  -- ${detail}`))
  if (!cond) FAILS.push(name)
}

export async function step(name, fn) {
  try {
    return await fn()
  } catch (e) {
    check(name, false, `${e?.name}: ${e?.message}`)
    return undefined
  }
}

// Prints the verdict and exits 1 if any check failed.
export function finish() {
  console.log(FAILS.length ? `\n${FAILS.length} failed: ${FAILS.join(', ')}` : '\nALL PASSED')
  process.exit(FAILS.length ? 1 : 0)
}
