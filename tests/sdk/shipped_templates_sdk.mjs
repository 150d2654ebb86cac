// The code-interpreter-v1 template built from its recipe, driven by the unmodified
// @e2b/code-interpreter JS SDK: a matplotlib figure comes back as a PNG that decodes as an
// image, and pandas works. Runs after shipped_templates_sdk.py has waited for the build.
import { inflateSync } from 'node:zlib'
import { Sandbox as CodeInterpreter } from '@e2b/code-interpreter'
import { check, finish, step } from './checks.mjs'

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
  return c >>> 0
})

function crc32 (bytes) {
  let c = 0xffffffff
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8)
  return (c ^ 0xffffffff) >>> 0
}

// Width and height of an 8-bit non-interlaced PNG whose chunks, CRCs and scanlines (size and
// filter types) are all well formed; throws otherwise.
function decodePng (data) {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
  if (!data.subarray(0, 8).equals(signature)) throw new Error('not a PNG signature')
  let at = 8
  let header
  const idat = []
  for (;;) {
    const length = data.readUInt32BE(at)
    const kind = data.subarray(at + 4, at + 8)
    const body = data.subarray(at + 8, at + 8 + length)
    if (crc32(Buffer.concat([kind, body])) !== data.readUInt32BE(at + 8 + length)) {
      throw new Error(`bad CRC in ${kind}`)
    }
    at += 12 + length
    if (kind.toString() === 'IHDR') header = body
    else if (kind.toString() === 'IDAT') idat.push(body)
    else if (kind.toString() === 'IEND') break
  }
  const width = header.readUInt32BE(0)
  const height = header.readUInt32BE(4)
  const channels = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[header[9]]
  if (header[8] !== 8 || header[12] !== 0 || !channels) throw new Error('unsupported PNG')
  const raw = inflateSync(Buffer.concat(idat))
  const stride = width * channels + 1
  if (raw.length !== height * stride) throw new Error(`${raw.length} bytes for ${width}x${height}`)
  for (let y = 0; y < height; y++) {
    if (raw[y * stride] > 4) throw new Error(`unknown filter on row ${y}`)
  }
  return { width, height }
}

const ci = await CodeInterpreter.create({ timeoutMs: 300_000 })
try {
  const sum = await step('pandas', () => ci.runCode(
    "import pandas as pd\nint(pd.Series([1, 2, 3]).sum())"))
  check('pandas computes', sum?.text === '6', JSON.stringify(sum))
  const plotted = await step('matplotlib', () => ci.runCode(
    'import matplotlib.pyplot as plt\nplt.bar(["a", "b"], [3, 5])\nplt.show()'))
  const pngs = (plotted?.results ?? []).filter((r) => r.png).map((r) => r.png)
  check('a matplotlib plot gives one PNG result', pngs.length === 1, JSON.stringify(plotted?.logs))
  if (pngs.length === 1) {
    try {
      const { width, height } = decodePng(Buffer.from(pngs[0], 'base64'))
      check('the PNG decodes as an image', width > 100 && height > 100, `${width}x${height}`)
    } catch (e) {
      check('the PNG decodes as an image', false, e.message)
    }
  }
} finally {
  await step('kill', () => ci.kill())
}
finish()
