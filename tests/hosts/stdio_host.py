#!/usr/bin/env python3
"""A stand-in MCP host for mcp-reaper's tests (Python 3.11, stdlib only).

It starts real stdio MCP servers the way hosts do, `npm exec --offline <pkg>`
with cwd = the npm dir (so the tree is `npm exec` -> `sh -c` -> `node`), and
performs the MCP `initialize` handshake before it reports a session ready.

Transports:
  socket  Like Node/libuv hosts: one AF_UNIX SOCK_STREAM socketpair PER STDIO
          STREAM (stdin, stdout and stderr each get their own pair). The
          child's fds 0, 1 and 2 are socket ends; the host keeps the other
          three ends. `host_fds.stdin` != `host_fds.stdout`.
  pipe    Like Python's subprocess: subprocess.PIPE for stdin, stdout and
          stderr (three pipes, the host keeps the write end of stdin and the
          read ends of stdout and stderr).

Control protocol: one JSON object per line on this process's stdin, exactly
one JSON line answered on stdout per command. The first stdout line is
{"ready":true,"pid":<host pid>}. Commands:
  {"cmd":"spawn","id":"s1","transport":"socket"|"pipe",
   "package":"@modelcontextprotocol/server-everything",
   "args":[...], "env":{"K":"V"}, "timeout_s":60}
      -> {"ok":true,"id":"s1","pid":<npm exec pid>,
          "host_fds":{"stdin":N,"stdout":M,"stderr":E},"handshake_s":1.2}
      On failure (timeout, early exit): {"ok":false,"id":..,"pid":..,
      "error":..,"stderr_tail":..}; the failed tree is killed.
  {"cmd":"ping","id":"s1","timeout_s":10}
      -> sends `tools/list`, {"ok":true,"id":..,"result_bytes":N}
  {"cmd":"close","id":"s1","streams":["stdin"]}
                                close host fds of the session (default: all
                                of stdin, stdout, stderr), signal nobody (the
                                leak shape). Note: server-everything@2025.4.8
                                survives stdin EOF, but its next log
                                notification (every 15 s) to a closed stdout
                                kills it with an uncaught EPIPE; close only
                                "stdin" for a leak that lasts.
  {"cmd":"shutdown","id":"s1"}  shutdown(SHUT_RDWR) on the host's stdin and
                                stdout socket ends without closing them
                                (socket sessions only).
  {"cmd":"silence","id":"s1"}   marker: keep the fds, stop talking.
  {"cmd":"handoff","id":"s1"}   hands the session's host fds to a helper
                                process (`sleep`, a child of this host that
                                keeps them), then closes this host's own
                                copies: the far end lives on in the helper.
      -> {"ok":true,"id":..,"helper_pid":N}
  {"cmd":"list"}                -> {"ok":true,"sessions":[...]}
  {"cmd":"exit"}                -> {"ok":true}, then exits at once without
                                touching any child.
Errors: {"ok":false,"error":"..."} (unknown command, unknown session, ...).

Children are never signalled except a tree whose handshake failed. Exited
`npm exec` roots are reaped promptly by a background thread (as libuv does on
SIGCHLD), so no zombie lingers. Server stderr is drained by one thread per
session so a chatty server never blocks.
"""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
NPM_DIR = os.environ.get("MCP_REAPER_NPM_DIR") or os.path.normpath(
    os.path.join(HERE, "..", "npm")
)
PROTOCOL_VERSION = "2024-11-05"
STDERR_TAIL = 4096

# Writes to a released peer must raise, not kill the host.
signal.signal(signal.SIGPIPE, signal.SIG_IGN)


class SessionError(Exception):
    pass


class Session:
    def __init__(self, sid, transport, proc, fds, socks):
        self.id = sid
        self.transport = transport
        self.proc = proc
        # Raw host-side fds: {"stdin": n, "stdout": n, "stderr": n}.
        self.fds = dict(fds)
        # For socket sessions: the socket objects owning those fds.
        self.socks = socks
        self.state = "starting"
        self.next_id = 1
        self.buf = b""
        self.err_tail = b""
        self.err_lock = threading.Lock()
        self.err_fd = self.fds.get("stderr")
        self.drainer = threading.Thread(target=self._drain, daemon=True)
        self.drainer.start()

    # -- stderr -----------------------------------------------------------
    def _drain(self):
        # Polls without blocking under err_lock and sleeps outside it, so
        # close() never closes the fd while this thread sits in a syscall on
        # it (a blocked read or select holds a reference to the file, which
        # would keep the host's end alive after close).
        while True:
            with self.err_lock:
                fd = self.err_fd
                if fd is None:
                    return
                try:
                    ready, _, _ = select.select([fd], [], [], 0)
                    data = os.read(fd, 65536) if ready else None
                except OSError:
                    return
                if data == b"":
                    return  # EOF; the fd stays open until close()
                if data:
                    self.err_tail = (self.err_tail + data)[-STDERR_TAIL:]
            if data is None:
                time.sleep(0.05)

    def stderr_tail(self):
        return self.err_tail.decode("utf-8", "replace")

    # -- stdio ------------------------------------------------------------
    def _require_open(self):
        if self.fds.get("stdin") is None or self.fds.get("stdout") is None:
            raise SessionError(f"session {self.id} is {self.state}")

    def send(self, msg):
        self._require_open()
        data = (json.dumps(msg) + "\n").encode()
        fd = self.fds["stdin"]
        while data:
            n = os.write(fd, data)
            data = data[n:]

    def _read_line(self, deadline):
        fd = self.fds["stdout"]
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SessionError("timed out waiting for the server")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise SessionError("server stdout reached EOF")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def request(self, method, params, timeout_s):
        """Sends a request and returns (raw response line, parsed response)."""
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        deadline = time.monotonic() + timeout_s
        while True:
            self._require_open()
            line = self._read_line(deadline)
            if not line.strip():
                continue
            try:
                resp = json.loads(line)
            except ValueError:
                continue  # not JSON-RPC: ignore, as SDK clients do
            if "method" in resp:
                if "id" in resp:  # a server->client request: refuse it
                    self.send({
                        "jsonrpc": "2.0", "id": resp["id"],
                        "error": {"code": -32601, "message": "not supported"},
                    })
                continue  # notifications (log messages) are skipped
            if resp.get("id") != rid:
                continue
            if "error" in resp:
                raise SessionError(f"{method} failed: {resp['error']}")
            return line, resp

    def handshake(self, timeout_s):
        self.request("initialize", {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mcp-reaper-test-host", "version": "0.1.0"},
        }, timeout_s)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    # -- host-side lifecycle ---------------------------------------------
    def close(self, streams=("stdin", "stdout", "stderr")):
        for name in streams:
            if name not in self.fds:
                raise SessionError(f"unknown stream {name!r}")
        for name in streams:
            if name == "stderr":
                with self.err_lock:
                    if self.err_fd is not None:
                        self._close_one("stderr")
                        self.err_fd = None
            elif self.fds.get(name) is not None:
                self._close_one(name)
            self.fds[name] = None
        open_left = [n for n, fd in self.fds.items() if fd is not None]
        self.state = "closed" if not open_left else "closed:" + ",".join(
            n for n in self.fds if n not in open_left)

    def _close_one(self, name):
        sock = self.socks.get(name) if self.socks else None
        if sock is not None:
            sock.close()
            return
        pipe = {"stdin": self.proc.stdin, "stdout": self.proc.stdout,
                "stderr": self.proc.stderr}[name]
        pipe.close()

    def shutdown(self):
        if self.transport != "socket":
            raise SessionError("shutdown applies to socket sessions only")
        self._require_open()
        for name in ("stdin", "stdout"):
            self.socks[name].shutdown(socket.SHUT_RDWR)
        self.state = "shutdown"

    def describe(self):
        return {
            "id": self.id,
            "pid": self.proc.pid,
            "transport": self.transport,
            "host_fds": self.fds,
            "state": self.state,
            "exit_status": self.proc.returncode,
        }


class Host:
    def __init__(self):
        self.sessions = {}
        self.lock = threading.Lock()  # guards self.sessions for the reaper
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self):
        while True:
            time.sleep(0.2)
            with self.lock:
                procs = [s.proc for s in self.sessions.values()]
            for p in procs:
                p.poll()

    def _session(self, cmd):
        sid = cmd.get("id")
        s = self.sessions.get(sid)
        if s is None:
            raise SessionError(f"unknown session {sid!r}")
        return s

    def spawn(self, cmd):
        sid = cmd.get("id")
        if not isinstance(sid, str) or not sid:
            raise SessionError("spawn needs a string id")
        if sid in self.sessions:
            raise SessionError(f"session {sid!r} exists")
        transport = cmd.get("transport", "socket")
        package = cmd.get("package", "@modelcontextprotocol/server-everything")
        args = [str(a) for a in cmd.get("args", [])]
        timeout_s = float(cmd.get("timeout_s", 60))
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in (cmd.get("env") or {}).items()})
        argv = ["npm", "exec", "--offline", "--", package, *args]

        t0 = time.monotonic()
        if transport == "socket":
            pairs = {n: socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                     for n in ("stdin", "stdout", "stderr")}
            try:
                proc = subprocess.Popen(
                    argv, cwd=NPM_DIR, env=env,
                    stdin=pairs["stdin"][1].fileno(),
                    stdout=pairs["stdout"][1].fileno(),
                    stderr=pairs["stderr"][1].fileno(),
                )
            finally:
                for _, child_end in pairs.values():
                    child_end.close()
            socks = {n: p[0] for n, p in pairs.items()}
            fds = {n: s.fileno() for n, s in socks.items()}
        elif transport == "pipe":
            proc = subprocess.Popen(
                argv, cwd=NPM_DIR, env=env, bufsize=0,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            socks = None
            fds = {"stdin": proc.stdin.fileno(), "stdout": proc.stdout.fileno(),
                   "stderr": proc.stderr.fileno()}
        else:
            raise SessionError(f"unknown transport {transport!r}")

        s = Session(sid, transport, proc, fds, socks)
        with self.lock:
            self.sessions[sid] = s
        try:
            s.handshake(timeout_s)
        except (SessionError, OSError) as e:
            kill_tree(proc.pid)
            proc.wait()
            s.close()
            s.state = "failed"
            time.sleep(0.05)
            return {"ok": False, "id": sid, "pid": proc.pid,
                    "error": f"handshake: {e}", "stderr_tail": s.stderr_tail()}
        s.state = "open"
        return {"ok": True, "id": sid, "pid": proc.pid, "host_fds": fds,
                "handshake_s": round(time.monotonic() - t0, 3)}

    def ping(self, cmd):
        s = self._session(cmd)
        line, _ = s.request("tools/list", None, float(cmd.get("timeout_s", 10)))
        return {"ok": True, "id": s.id, "result_bytes": len(line)}

    def handle(self, cmd):
        op = cmd.get("cmd")
        if op == "spawn":
            return self.spawn(cmd)
        if op == "ping":
            return self.ping(cmd)
        if op == "close":
            s = self._session(cmd)
            s.close(tuple(cmd.get("streams") or ("stdin", "stdout", "stderr")))
            return {"ok": True, "id": s.id}
        if op == "shutdown":
            s = self._session(cmd)
            s.shutdown()
            return {"ok": True, "id": s.id}
        if op == "handoff":
            s = self._session(cmd)
            s._require_open()
            keep = [fd for fd in s.fds.values() if fd is not None]
            helper = subprocess.Popen(
                ["sleep", "3600"], pass_fds=keep, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            s.close()
            s.state = "handed-off"
            return {"ok": True, "id": s.id, "helper_pid": helper.pid}
        if op == "silence":
            s = self._session(cmd)
            if s.state == "open":
                s.state = "silenced"
            return {"ok": True, "id": s.id}
        if op == "list":
            with self.lock:
                sessions = list(self.sessions.values())
            for s in sessions:
                s.proc.poll()
            return {"ok": True, "sessions": [s.describe() for s in sessions]}
        raise SessionError(f"unknown command {op!r}")


def descendants(root):
    """PIDs below `root` by /proc ppid lineage, children before parents' kin."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for c in children.get(pid, []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(root):
    for pid in [*descendants(root), root]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    host = Host()
    reply({"ready": True, "pid": os.getpid(), "npm_dir": NPM_DIR})
    for raw in sys.stdin:
        raw = raw.strip()
        if not raw:
            continue
        try:
            cmd = json.loads(raw)
            if not isinstance(cmd, dict):
                raise SessionError("command must be a JSON object")
        except (ValueError, SessionError) as e:
            reply({"ok": False, "error": f"bad command: {e}"})
            continue
        if cmd.get("cmd") == "exit":
            reply({"ok": True})
            os._exit(0)  # no cleanup: children and their fds are left as-is
        try:
            out = host.handle(cmd)
        except (SessionError, OSError) as e:
            out = {"ok": False, "error": str(e)}
            if "id" in cmd:
                out["id"] = cmd["id"]
        reply(out)
    # Controller went away: behave like `exit`.
    os._exit(0)


if __name__ == "__main__":
    main()
