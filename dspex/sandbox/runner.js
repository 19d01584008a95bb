// dspex sandbox runner: one Deno process holding one Pyodide (CPython on WebAssembly).
//
// It speaks JSON lines with the host (dspex/sandbox/process.py): stdout carries only
// protocol messages, written through a writer captured before any sandboxed code runs;
// everything else (Pyodide's own messages, console output) goes to stderr. All reads
// of stdin are synchronous, so a tool call made from the middle of the sandboxed code
// can wait for the host's answer without JSPI or threads.
//
// Host -> runner: {op: "init", guest, pyodide_dir, mounts}, {op: "execute", id, code,
// variables, tools, outputs}, {op: "tool_result", call, ok, value | error_type, message}.
// Runner -> host: {op: "ready", pid}, {op: "tool_call", id, call, name, payload},
// {op: "done", id, outcome}. The host closing stdin ends the process.

import { loadPyodide } from "npm:pyodide@0.27.7";

const stdout = Deno.stdout;
const stderr = Deno.stderr;
const stdin = Deno.stdin;
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const stringify = JSON.stringify;
const parse = JSON.parse;

function writeAll(stream, text) {
  const data = encoder.encode(text);
  let written = 0;
  while (written < data.length) written += stream.writeSync(data.subarray(written));
}

function send(message) {
  writeAll(stdout, stringify(message) + "\n");
}

function log(...parts) {
  writeAll(stderr, parts.map(String).join(" ") + "\n");
}

// Nothing but send() may write to stdout.
for (const name of ["log", "info", "debug", "warn", "error", "trace", "dir", "table"]) {
  console[name] = log;
}

// Synchronous line reader over stdin.
let buffered = new Uint8Array(0);
const chunk = new Uint8Array(1 << 16);

function readLine() {
  while (true) {
    const newline = buffered.indexOf(10);
    if (newline >= 0) {
      const line = decoder.decode(buffered.subarray(0, newline));
      buffered = buffered.slice(newline + 1);
      return line;
    }
    const count = stdin.readSync(chunk);
    if (count === null || count === 0) return null;
    const grown = new Uint8Array(buffered.length + count);
    grown.set(buffered);
    grown.set(chunk.subarray(0, count), buffered.length);
    buffered = grown;
  }
}

const pyodide = await loadPyodide({ stdout: log, stderr: log });

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

// Pyodide is loaded: its own files need not stay readable.
Deno.permissions.revokeSync({ name: "read", path: init.pyodide_dir });

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
  let outcome;
  try {
    outcome = await guestRun(
      message.code,
      message.variables ?? "{}",
      stringify(message.tools ?? []),
      stringify(message.outputs ?? null),
    );
  } catch (error) {
    // The guest catches everything the code raises; reaching here is a runner fault.
    outcome = stringify({
      kind: "error",
      error_type: "SandboxError",
      message: String(error?.message ?? error),
      traceback: "",
    });
  }
  send({ op: "done", id: message.id, outcome: String(outcome) });
  currentExecution = null;
}
