#!/usr/bin/env node
// A real MCP host for mcp-reaper's tests, written on the official TypeScript
// SDK (`@modelcontextprotocol/sdk`, `Client` over `StdioClientTransport`),
// run with the machine's node. It starts stdio servers as SDK hosts do:
// `npm exec --offline <pkg>` (cwd = the npm dir), so each tree is
// `npm exec` -> `sh -c` -> `node`, and ends them the SDK's way:
// `client.close()` ends stdin, waits 2 s, SIGTERMs and then SIGKILLs the
// `npm exec` process only (HOSTS.md), while this process lives on.
//
// Control protocol: one JSON object per line on stdin, exactly one JSON line
// answered on stdout per command. The first stdout line is
// {"ready":true,"pid":<host pid>}. Commands:
//   {"cmd":"spawn","id":"s1","package":"@modelcontextprotocol/server-everything"}
//       -> {"ok":true,"id":"s1","pid":<npm exec pid>} once initialized.
//   {"cmd":"ping","id":"s1"}   tools/list -> {"ok":true,"id":..,"tools":N}
//   {"cmd":"close","ids":["s1","s2"]}
//                              client.close() of each, all at once, answered
//                              once every one returned (the SDK's whole
//                              stdin, SIGTERM, SIGKILL sequence).
//   {"cmd":"exit"}             -> {"ok":true}, then exits without touching
//                              any child.
// Errors: {"ok":false,"error":"..."}.

import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const NPM_DIR = process.env.MCP_REAPER_NPM_DIR;
if (!NPM_DIR) {
  process.stderr.write('sdk_host: MCP_REAPER_NPM_DIR is not set\n');
  process.exit(2);
}
const sdk = (sub) =>
  pathToFileURL(join(NPM_DIR, 'node_modules/@modelcontextprotocol/sdk/dist/esm', sub)).href;
const { Client } = await import(sdk('client/index.js'));
const { StdioClientTransport } = await import(sdk('client/stdio.js'));

const sessions = new Map();

async function spawn({ id, package: pkg }) {
  if (sessions.has(id)) throw new Error(`session ${id} exists`);
  const transport = new StdioClientTransport({
    command: 'npm',
    args: ['exec', '--offline', pkg],
    cwd: NPM_DIR,
    // stderr: the SDK's default, inherited from this host.
  });
  const client = new Client({ name: 'mcp-reaper-sdk-host', version: '0.1.0' });
  await client.connect(transport);
  sessions.set(id, { client, transport, pid: transport.pid });
  return { pid: transport.pid };
}

async function ping({ id }) {
  const s = sessions.get(id);
  if (!s) throw new Error(`unknown session ${id}`);
  const res = await s.client.listTools(undefined, { timeout: 10000 });
  return { tools: res.tools.length };
}

async function close({ ids }) {
  const closing = ids.map((id) => {
    const s = sessions.get(id);
    if (!s) throw new Error(`unknown session ${id}`);
    sessions.delete(id);
    return s.client.close();
  });
  await Promise.all(closing);
  return {};
}

const handlers = { spawn, ping, close };
const answer = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

answer({ ready: true, pid: process.pid });
// One command at a time, in order.
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    answer({ ok: false, error: `bad JSON: ${e.message}` });
    continue;
  }
  if (cmd.cmd === 'exit') {
    answer({ ok: true });
    process.exit(0);
  }
  const h = handlers[cmd.cmd];
  if (!h) {
    answer({ ok: false, error: `unknown command ${cmd.cmd}` });
    continue;
  }
  try {
    answer({ ok: true, id: cmd.id, ...(await h(cmd)) });
  } catch (e) {
    answer({ ok: false, id: cmd.id, error: String(e?.message ?? e) });
  }
}
// stdin closed: leave every child as it is, like a host that crashed.
process.exit(0);
