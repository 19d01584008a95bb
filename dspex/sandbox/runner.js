// dspex sandbox runner: one Deno process holding one Pyodide (CPython on WebAssembly).
//
// It speaks JSON lines with the host (dspex/sandbox/process.py): stdout carries only
// protocol messages, written through a writer captured before any sandboxed code runs;
// everything else (Pyodide's own messages, console output) goes to stderr. All reads
// of stdin are synchronous, so a tool call made from the middle of the sandboxed code
// can wait for the host's answer without JSPI or threads.
//
// Host -> runner: {op: "init", guest, pyodide_dir, mounts}, {op: "execute", id, code,
// tools, outputs, blob}, {op: "tool_result", call, ok, value | error_type, message}.
// Runner -> host: {op: "ready", pid}, {op: "tool_call", id, call, name, payload},
// {op: "done", id, blob}. A message with ``blob: N`` is followed by N raw bytes: the
// variables going in, the outcome coming out, both JSON. They go between the pipe and
// Pyodide's in-memory files as bytes, never as JavaScript strings, so large values stay
// out of the (capped) JavaScript heap. The host closing stdin ends the process.

import { loadPyodide } from "npm:pyodide@0.27.7";

// Everything the protocol relies on is captured before any sandboxed code runs: the code
// can reach this realm (``import js``) and replace globals and prototypes, but not these.
const writeOut = Deno.stdout.writeSync.bind(Deno.stdout);
const writeErr = Deno.stderr.writeSync.bind(Deno.stderr);
const readIn = Deno.stdin.readSync.bind(Deno.stdin);
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const encode = encoder.encode.bind(encoder);
const decode = decoder.decode.bind(decoder);
const stringify = JSON.stringify;
const parse = JSON.parse;
const assign = Object.assign;
const createObject = Object.create;

function writeAll(write, text) {
  const data = encode(text);
  let written = 0;
  while (written < data.length) written += write(data.subarray(written));
}

function send(fields) {
  // A null-prototype object: a toJSON the code puts on Object.prototype is not consulted.
  writeAll(writeOut, stringify(assign(createObject(null), fields)) + "\n");
}

function sendWithBlob(fields, bytes) {
  send(assign(createObject(null), fields, { blob: bytes.length }));
  let written = 0;
  while (written < bytes.length) written += writeOut(bytes.subarray(written));
}

function log(...parts) {
  writeAll(writeErr, parts.map(String).join(" ") + "\n");
}

// Nothing but send() may write to stdout.
for (const name of ["log", "info", "debug", "warn", "error", "trace", "dir", "table"]) {
  console[name] = log;
}

// Synchronous line reader over stdin. Chunks are kept apart until a newline arrives, so
// a long line (a large variable) costs one copy, not one per chunk.
let pending = [];
let rest = new Uint8Array(0);
const chunk = new Uint8Array(1 << 20);

function joinBytes(parts) {
  let size = 0;
  for (const part of parts) size += part.length;
  const joined = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    joined.set(part, offset);
    offset += part.length;
  }
  return joined;
}

function readLine() {
  while (true) {
    const newline = rest.indexOf(10);
    if (newline >= 0) {
      const line = decode(joinBytes([...pending, rest.subarray(0, newline)]));
      pending = [];
      rest = rest.slice(newline + 1);
      return line;
    }
    if (rest.length) pending.push(rest);
    const count = readIn(chunk);
    if (count === null || count === 0) return null;
    rest = chunk.slice(0, count);
  }
}

// The `size` raw bytes that follow a message's line (null if stdin closes first).
function readBytes(size) {
  const parts = [];
  let missing = size;
  while (missing > 0) {
    if (rest.length === 0) {
      const count = readIn(chunk);
      if (count === null || count === 0) return null;
      rest = chunk.slice(0, count);
    }
    const taken = Math.min(missing, rest.length);
    parts.push(rest.subarray(0, taken));
    rest = rest.subarray(taken);
    missing -= taken;
  }
  return joinBytes(parts);
}

// `--make-snapshot PATH` (run once by `dspex sandbox install`): save the memory of a
// freshly loaded Pyodide. `--snapshot PATH`: start from that memory, which takes a
// fraction of the time and CPU of loading Python afresh.
const [mode, snapshotPath] = Deno.args;
if (mode === "--make-snapshot") {
  const fresh = await loadPyodide({ _makeSnapshot: true, stdout: log, stderr: log });
  Deno.writeFileSync(snapshotPath, fresh.makeMemorySnapshot());
  Deno.exit(0);
}

async function startPyodide() {
  if (mode === "--snapshot") {
    try {
      const memory = Deno.readFileSync(snapshotPath);
      return await loadPyodide({ _loadSnapshot: memory, stdout: log, stderr: log });
    } catch (error) {
      log("dspex runner: the Pyodide snapshot did not load, loading afresh:", error?.message ?? error);
    }
  }
  return await loadPyodide({ stdout: log, stderr: log });
}

const pyodide = await startPyodide();

const init = parse(readLine() ?? "null");
if (!init || init.op !== "init") {
  log("dspex runner: expected an init message first");
  Deno.exit(3);
}

// Opted-in host paths are copied in when the process starts: the code reads a snapshot
// and may change its copy, never the host's files.
function copyIn(host, guest, isDir) {
  if (!isDir) {
    pyodide.FS.writeFile(guest, Deno.readFileSync(host));
    return;
  }
  pyodide.FS.mkdirTree(guest);
  for (const entry of Deno.readDirSync(host)) {
    if (entry.isSymlink) continue;  // a link may point outside what was opted in
    copyIn(`${host}/${entry.name}`, `${guest}/${entry.name}`, entry.isDirectory);
  }
}
for (const mount of init.mounts) {
  const parent = mount.guest.split("/").slice(0, -1).join("/");
  if (parent) pyodide.FS.mkdirTree(parent);
  copyIn(mount.host, mount.guest, mount.dir);
}

// Pyodide is loaded: its own files (and the snapshot) need not stay readable.
Deno.permissions.revokeSync({ name: "read", path: init.pyodide_dir });
if (mode === "--snapshot") Deno.permissions.revokeSync({ name: "read", path: snapshotPath });

let currentExecution = null;
let callCounter = 0;

// Called by the guest (synchronously) when sandboxed code calls a tool.
function callTool(name, payload) {
  const call = ++callCounter;
  send({ op: "tool_call", id: currentExecution, call, name, payload });
  while (true) {
    const line = readLine();
    if (line === null) {
      return stringify({ ok: false, error_type: "ConnectionError", message: "the host went away" });
    }
    const reply = parse(line);
    if (reply.op === "tool_result" && reply.call === call) return line;
    log("dspex runner: ignored an unexpected message while waiting for a tool:", line.slice(0, 200));
  }
}

pyodide.registerJsModule("_dspex_host", { call_tool: callTool });
pyodide.globals.set("_dspex_guest_source", init.guest);
pyodide.runPython(
  "import sys, types\n" +
    "_m = types.ModuleType('_dspex_guest')\n" +
    "exec(compile(_dspex_guest_source, '<dspex-guest>', 'exec'), _m.__dict__)\n" +
    "sys.modules['_dspex_guest'] = _m\n" +
    "del _m, _dspex_guest_source, sys, types\n",
);
const guestRun = pyodide.pyimport("_dspex_guest").run;
pyodide.FS.mkdirTree("/tmp/.dspex");
const VARIABLES_FILE = "/tmp/.dspex/variables.json";
const OUTCOME_FILE = "/tmp/.dspex/outcome.json";

send({ op: "ready", pid: Deno.pid });

while (true) {
  const line = readLine();
  if (line === null) break;
  let message;
  try {
    message = parse(line);
  } catch (_error) {
    log("dspex runner: ignored a line that is not JSON");
    continue;
  }
  if (message.op !== "execute") continue;
  currentExecution = message.id;
  const variables = message.blob ? readBytes(message.blob) : null;
  if (message.blob && variables === null) break;
  try {
    if (variables) pyodide.FS.writeFile(VARIABLES_FILE, variables);
    await guestRun(
      message.code,
      variables ? VARIABLES_FILE : "",
      OUTCOME_FILE,
      stringify(message.tools ?? []),
      stringify(message.outputs ?? null),
    );
    const outcome = pyodide.FS.readFile(OUTCOME_FILE);
    pyodide.FS.unlink(OUTCOME_FILE);
    sendWithBlob({ op: "done", id: message.id }, outcome);
  } catch (error) {
    // The guest catches everything the code raises; reaching here is a runner fault.
    const outcome = stringify({
      kind: "error",
      error_type: "SandboxError",
      message: String(error?.message ?? error),
      traceback: "",
    });
    sendWithBlob({ op: "done", id: message.id }, encode(outcome));
  }
  currentExecution = null;
}
