#!/usr/bin/env python3
"""A stand-in host whose end of a server's stdio no /proc walk can see
(stdlib only; for mcp-reaper's ownership tests).

  unseen_host.py MODE MARKER

Starts the fake server `python3 -c <pause> MARKER` with its stdin and
stdout one end of an AF_UNIX stream socketpair, keeps the other end (the
far end), then hides it by MODE:

  scm     sends the far end in an SCM_RIGHTS message to a forked receiver
          that never receives it, then closes its own copy: the far end is
          in flight, held by no fd table, while the kernel still records
          the server's peer.
  thread  a thread calls unshare(CLONE_FILES) (its own copy of the fd
          table), then the main thread closes the far end: only that
          thread's table, which /proc/PID/fd does not show, holds it.

Prints one JSON line {"server": PID, "receiver": PID|null, "thread": TID|null,
"far_inode": N} once the far end is hidden, then sleeps until stdin closes.
"""

import ctypes
import json
import os
import socket
import subprocess
import sys
import threading

CLONE_FILES = 0x400


def main():
    mode, marker = sys.argv[1], sys.argv[2]
    host_end, server_end = socket.socketpair()
    far_inode = os.fstat(host_end.fileno()).st_ino
    server = subprocess.Popen(
        [sys.executable, "-c", "import signal; signal.pause()", marker],
        stdin=server_end.fileno(), stdout=server_end.fileno(),
        stderr=subprocess.DEVNULL)
    server_end.close()
    out = {"server": server.pid, "receiver": None, "thread": None,
           "far_inode": far_inode}
    if mode == "scm":
        carrier, inbox = socket.socketpair()
        closed_r, closed_w = os.pipe()
        receiver = os.fork()
        if receiver == 0:
            carrier.close()
            host_end.close()
            os.close(closed_r)
            os.write(closed_w, b"k")  # its copies are closed
            os.read(0, 1)  # never receives from inbox; stdin EOF ends it
            os._exit(0)
        inbox.close()
        os.close(closed_w)
        if os.read(closed_r, 1) != b"k":
            sys.exit("the receiver died before closing its copies")
        os.close(closed_r)
        socket.send_fds(carrier, [b"x"], [host_end.fileno()])
        host_end.close()
        carrier.close()
        out["receiver"] = receiver
    elif mode == "thread":
        libc = ctypes.CDLL(None, use_errno=True)
        ready = threading.Event()
        tid = []

        def keeper():
            if libc.unshare(CLONE_FILES) != 0:
                sys.exit("unshare(CLONE_FILES): errno %d" % ctypes.get_errno())
            tid.append(threading.get_native_id())
            ready.set()
            threading.Event().wait()

        threading.Thread(target=keeper, daemon=True).start()
        if not ready.wait(30):
            sys.exit("the keeper thread never unshared its fd table")
        host_end.close()
        out["thread"] = tid[0]
    else:
        sys.exit("unknown mode " + mode)
    print(json.dumps(out), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
