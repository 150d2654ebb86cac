// One JavaScript context's interpreter: runs cells in one V8 context, so state persists.
// Requests arrive as JSON lines on the descriptor named by argv[2]; results, errors and the
// end of each execution leave as JSON lines on the descriptor named by argv[3]. The cell's
// console output goes to descriptors 1 and 2, each closed by the execution's marker.
'use strict';
const fs = require('fs');
const readline = require('readline');
const stream = require('stream');
const util = require('util');
const vm = require('vm');

const requestsFd = Number(process.argv[2]);
const repliesFd = Number(process.argv[3]);

// Synchronous, so that everything a cell printed is written before its marker.
function syncWritable(fd) {
  return new stream.Writable({
    write(chunk, _encoding, done) {
      fs.writeSync(fd, chunk);
      done();
    },
  });
}

const cellConsole = new console.Console({ stdout: syncWritable(1), stderr: syncWritable(2) });
const sandbox = {
  console: cellConsole, require, process, Buffer, URL, TextEncoder, TextDecoder,
  setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate,
};
sandbox.globalThis = sandbox;
const context = vm.createContext(sandbox);
let count = 0;

function send(message) {
  fs.writeSync(repliesFd, JSON.stringify(message) + '\n');
}

function plainText(value) {
  return typeof value === 'string' ? value : util.inspect(value);
}

async function execute(request) {
  count += 1;
  send({ type: 'number_of_executions', execution_count: count });
  const envVars = request.env_vars || {};
  const saved = {};
  for (const [name, value] of Object.entries(envVars)) {
    saved[name] = process.env[name];
    process.env[name] = value;
  }
  try {
    let value = vm.runInContext(request.code, context, { filename: `cell-${count}`, breakOnSigint: true });
    if (value && typeof value.then === 'function') {
      value = await value;
    }
    if (value !== undefined) {
      send({ type: 'result', is_main_result: true, text: plainText(value) });
    }
  } catch (error) {
    const isError = error instanceof Error || (error && error.stack);
    send({
      type: 'error',
      name: isError ? error.name : 'Error',
      value: isError ? error.message : String(error),
      traceback: isError ? String(error.stack) : String(error),
    });
  } finally {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    fs.writeSync(1, request.marker);
    fs.writeSync(2, request.marker);
    send({ type: 'done' });
  }
}

// An interrupt stops a running cell (breakOnSigint); between cells it must not end the worker.
process.on('SIGINT', () => {});

const lines = readline.createInterface({ input: fs.createReadStream(null, { fd: requestsFd }) });
let queue = Promise.resolve();
lines.on('line', (line) => {
  const request = JSON.parse(line);
  queue = queue.then(() => {
    if (request.kind === 'setenv') Object.assign(process.env, request.env);
    else if (request.kind === 'execute') return execute(request);
    return undefined;
  });
});
lines.on('close', () => process.exit(0));
