#!/usr/bin/env python3
"""A stand-in relay-chain MCP host for mcp-reaper's tests (stdlib only).

Models OpenClaw's shape (HOSTS.md): host -> relay -> anchor (setsid) ->
server, every hop's stdio an AF_UNIX stream socketpair, the server's fds
0/1/2 connected to the anchor, and a "lineage" socketpair whose far end the
host keeps and whose other end is the server's fd 3 (inherited by every
descendant). One script, four roles (argv[1]):

  host    Control protocol: one JSON command per stdin line, one JSON answer
          per stdout line; the first line is {"ready":true,"pid":N}.
            {"cmd":"spawn","id":"a","server":[argv...],"stuck":false}
                -> {"ok":true,"relay":P,"pid":<server root pid>} after the
                   MCP initialize handshake through the chain.
            {"cmd":"ping","id":"a"}  tools/list through the chain.
            {"cmd":"end","id":"a"}   the session ends: the host closes the
                                     top-level socket and the lineage socket.
            {"cmd":"exit"}
  relay   relay --lineage-fd N -- ANCHOR_ARGV: forwards bytes between its
          stdin/stdout and the anchor; on upstream EOF closes the anchor's
          socket and exits.
  anchor  anchor --lineage-fd N [--stuck] -- SERVER_ARGV: setsid, starts the
          server (cwd = the npm dir, lineage socket as fd 3), forwards
          bytes; on upstream EOF forwards EOF, kills its process group and
          any survivor in it, exits. --stuck: ignores upstream EOF (a relay
          of an ended session left behind).
  server  server [--delay S] [--escape keep|closeall --marker F] [--double-fork]
          [--nested-host] [--exec ARGV...]: a wrapper. --escape: a child
          escapes after 1 s with setsid and a double fork, keeping its
          inherited fds or closing them all, and writes its PID to F.
          --double-fork: after 1 s the launcher double-forks the real server
          and exits. --nested-host: starts `chain_host.py host` as its child
          (a server that is itself an agent host), its stdin a pipe whose
          write end it holds itself, its stdout /dev/null. --exec: the real server
          (else a minimal MCP server that ignores EOF).
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
SELF = os.path.abspath(__file__)
NPM_DIR = os.environ.get("MCP_REAPER_NPM_DIR") or os.path.normpath(
    os.path.join(HERE, "..", "npm"))
signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def pump(src_fd, dst_fd):
    """Copies src to dst until EOF on src; returns on EOF or error."""
    while True:
        try:
            data = os.read(src_fd, 65536)
        except OSError:
            return
        if not data:
            return
        try:
            while data:
                data = data[os.write(dst_fd, data):]
        except OSError:
            return


def spawn_with_lineage(argv, sock, lfd, cwd=None, stderr=None, setsid=False):
    def pre():
        if setsid:
            os.setsid()
        if lfd != 3:
            os.dup2(lfd, 3)
    return subprocess.Popen(
        argv, stdin=sock.fileno(), stdout=sock.fileno(),
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
        pass_fds=(3,) if lfd == 3 else (3, lfd), preexec_fn=pre, cwd=cwd)


def split_argv(args):
    i = args.index("--")
    return args[:i], args[i + 1:]


def opt(opts, name, default=None):
    return opts[opts.index(name) + 1] if name in opts else default


# -- relay --------------------------------------------------------------------
def relay(args):
    opts, anchor_argv = split_argv(args)
    lfd = int(opt(opts, "--lineage-fd"))
    mine, theirs = socket.socketpair()
    child = spawn_with_lineage(anchor_argv, theirs, lfd)
    theirs.close()
    down = threading.Thread(target=pump, args=(mine.fileno(), 1), daemon=True)
    down.start()
    pump(0, mine.fileno())  # upstream EOF: the session is over
    mine.close()
    os.close(0)
    os.close(1)
    try:
        child.wait(timeout=0.5)  # a stuck anchor is left behind
    except subprocess.TimeoutExpired:
        pass
    os._exit(0)


# -- anchor -------------------------------------------------------------------
def anchor(args):
    opts, server_argv = split_argv(args)
    lfd = int(opt(opts, "--lineage-fd"))
    stuck = "--stuck" in opts
    os.setsid()
    mine, theirs = socket.socketpair()
    err_mine, err_theirs = socket.socketpair()
    child = spawn_with_lineage(server_argv, theirs, lfd, cwd=NPM_DIR,
                               stderr=err_theirs.fileno())
    theirs.close()
    err_theirs.close()
    threading.Thread(target=pump, args=(err_mine.fileno(), 2),
                     daemon=True).start()
    threading.Thread(target=lambda: (pump(mine.fileno(), 1)),
                     daemon=True).start()
    threading.Thread(target=lambda: child.wait(), daemon=True).start()
    pump(0, mine.fileno())
    if stuck:
        while True:  # keeps the server's far end, forwards nothing
            time.sleep(600)
    # Teardown as OpenClaw's anchor does it: EOF, then the group, then any
    # survivor of the group found in /proc.
    try:
        mine.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    time.sleep(0.3)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    me = os.getpid()
    try:
        os.killpg(0, signal.SIGTERM)
    except OSError:
        pass
    time.sleep(0.5)
    pgid = os.getpgid(0)
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if os.getpgid(int(name)) == pgid:
                os.kill(int(name), signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)


# -- server wrapper -------------------------------------------------------------
def mini_server():
    buf = b""
    while True:
        try:
            chunk = os.read(0, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            while True:  # ignores EOF, like server-everything
                time.sleep(600)
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "id" not in msg:
                continue
            if msg.get("method") == "initialize":
                result = {"protocolVersion": "2024-11-05", "capabilities": {},
                          "serverInfo": {"name": "chain-fake", "version": "1"}}
            else:
                result = {"tools": []}
            out = json.dumps({"jsonrpc": "2.0", "id": msg["id"],
                              "result": result}).encode() + b"\n"
            os.write(1, out)


def server(args):
    exec_argv = None
    if "--exec" in args:
        i = args.index("--exec")
        args, exec_argv = args[:i], args[i + 1:]
    # Lets the daemon classify the wrapper before it execs the server.
    time.sleep(float(opt(args, "--delay", "0")))
    escape = opt(args, "--escape")
    marker = opt(args, "--marker")
    if escape:
        if os.fork() == 0:
            time.sleep(1)
            os.setsid()
            if os.fork() == 0:
                with open(marker + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.rename(marker + ".tmp", marker)
                if escape == "closeall":
                    os.closerange(0, 65536)
                while True:
                    time.sleep(600)
            os._exit(0)
    if "--nested-host" in args:
        if os.fork() == 0:
            # The host holds the write end of its own stdin: it never sees
            # EOF, so it outlives this server unless it is killed.
            r, w = os.pipe()
            os.dup2(r, 0)
            os.set_inheritable(w, True)
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.execv(sys.executable, [sys.executable, SELF, "host"])
    if "--double-fork" in args:
        time.sleep(1)
        if os.fork() == 0:
            if os.fork() == 0:
                if exec_argv:
                    os.execvp(exec_argv[0], exec_argv)
                mini_server()
            os._exit(0)
        os.wait()
        os._exit(0)
    if exec_argv:
        os.execvp(exec_argv[0], exec_argv)
    mini_server()


# -- host ---------------------------------------------------------------------
class Session:
    def __init__(self, sid, sock, lineage, proc):
        self.id, self.sock, self.lineage, self.proc = sid, sock, lineage, proc
        self.buf = b""
        self.next_id = 1

    def request(self, method, params, timeout_s):
        rid = self.next_id
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.sock.sendall((json.dumps(msg) + "\n").encode())
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\n" not in self.buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError("timed out")
                r, _, _ = select.select([self.sock], [], [], left)
                if r:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise RuntimeError("EOF from the chain")
                    self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            try:
                resp = json.loads(line)
            except ValueError:
                continue
            if resp.get("id") == rid and "method" not in resp:
                if "error" in resp:
                    raise RuntimeError(str(resp["error"]))
                return resp


def find_server_root(relay_pid, timeout_s=10):
    """The anchor's first child (the server's root), found through /proc."""
    def children(pid):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for a in children(relay_pid):
            kids = children(a)
            if kids:
                return a, kids[0]
        time.sleep(0.02)
    return None, None


def host():
    sessions = {}
    out = sys.stdout

    def answer(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    def reap():
        while True:
            time.sleep(0.2)
            for s in list(sessions.values()):
                s.proc.poll()
    threading.Thread(target=reap, daemon=True).start()
    answer({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        try:
            cmd = json.loads(line)
            c = cmd.get("cmd")
            if c == "spawn":
                top, theirs = socket.socketpair()
                lin_host, lin_child = socket.socketpair()
                lfd = lin_child.fileno()
                anchor_argv = [sys.executable, SELF, "anchor", "--lineage-fd",
                               "3"] + (["--stuck"] if cmd.get("stuck") else [])
                anchor_argv += ["--"] + cmd["server"]
                argv = [sys.executable, SELF, "relay", "--lineage-fd", "3",
                        "--"] + anchor_argv
                proc = spawn_with_lineage(argv, theirs, lfd)
                theirs.close()
                lin_child.close()
                s = Session(cmd["id"], top, lin_host, proc)
                sessions[s.id] = s
                a, root = find_server_root(proc.pid)
                s.request("initialize", {
                    "protocolVersion": "2024-11-05", "capabilities": {},
                    "clientInfo": {"name": "chain-host", "version": "1"},
                }, cmd.get("timeout_s", 60))
                top.sendall(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
                answer({"ok": True, "id": s.id, "relay": proc.pid,
                        "anchor": a, "pid": root})
            elif c == "ping":
                s = sessions[cmd["id"]]
                s.request("tools/list", {}, cmd.get("timeout_s", 10))
                answer({"ok": True, "id": s.id})
            elif c == "end":
                s = sessions[cmd["id"]]
                s.sock.close()
                s.lineage.close()
                answer({"ok": True, "id": s.id})
            elif c == "exit":
                answer({"ok": True})
                os._exit(0)
            else:
                answer({"ok": False, "error": f"unknown command {c!r}"})
        except Exception as e:  # noqa: BLE001 - every command gets an answer
            answer({"ok": False, "error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    role, rest = sys.argv[1], sys.argv[2:]
    {"host": lambda: host(), "relay": lambda: relay(rest),
     "anchor": lambda: anchor(rest), "server": lambda: server(rest)}[role]()
