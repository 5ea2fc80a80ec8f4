#!/bin/sh
# mcp-reaper-session-end.sh: tell mcp-reaper that an MCP host's session is
# over, so the daemon treats that session's server trees as `session-ended`
# and reaps them after its grace period (or only reports them, in observe
# mode or with --dry-run).
#
# Usage (called by the host, from its session-end hook):
#   mcp-reaper-session-end.sh SESSION_ID [HOST_PID]
#   MCP_SESSION_ID=abc mcp-reaper-session-end.sh
#
# SESSION_ID must be the id the daemon knows the trees by: the value of the
# environment variable that the host rule's `session_env` names, which the
# host sets on every server it starts (`mcp-reaper scan` shows it in the
# SESSION column). HOST_PID (default: this script's parent, $PPID) is only
# logged.
#
# The other form releases by owner instead of by session:
#   mcp-reaper release --owner "$PPID:FD"
# PID is the host process that holds the server's stdio, FD the fd number
# the host holds for that server's stdin (for Node hosts, the fd of the
# child's stdin pipe or socketpair; `mcp-reaper scan --json` lists a tree's
# `owner_fds`). Without ":FD", every tree that host process owns is
# released: use that only when one host process is one session (a CLI
# agent), never for a gateway that serves many sessions from one process.
#
# Only root may release sessions: the control socket is 0600 root and the
# daemon checks the caller's credentials. A host running as another user
# calls this script through sudo (see README.md in this directory). Set
# MCP_REAPER_SUDO="sudo -n" for that.
#
# Exit status: 0 always, so a host's session teardown never fails because
# of this hook (the daemon's kernel tier still catches what a missed
# release leaves). Set MCP_REAPER_HOOK_STRICT=1 to return the release
# command's own code instead: 0 matched at least one tree, 1 nothing
# matched, 2 usage, 3 daemon unreachable.
#
# Environment:
#   MCP_REAPER_BIN      the mcp-reaper binary (default: mcp-reaper)
#   MCP_REAPER_SOCKET   the control socket (default: the daemon's default)
#   MCP_REAPER_SUDO     a prefix such as "sudo -n" (default: none)
#   MCP_REAPER_DRY_RUN  1: ask what would be released, release nothing
#   MCP_REAPER_HOOK_STRICT  1: exit with the release command's code

set -u

id=${1:-${MCP_SESSION_ID:-}}
host_pid=${2:-$PPID}
bin=${MCP_REAPER_BIN:-mcp-reaper}

if [ -z "$id" ]; then
    echo "usage: $0 SESSION_ID [HOST_PID]  (or set MCP_SESSION_ID)" >&2
    [ "${MCP_REAPER_HOOK_STRICT:-0}" = 1 ] && exit 2
    exit 0
fi

set -- release --session "$id"
[ -n "${MCP_REAPER_SOCKET:-}" ] && set -- "$@" --socket "$MCP_REAPER_SOCKET"
[ "${MCP_REAPER_DRY_RUN:-0}" = 1 ] && set -- "$@" --dry-run

# The id goes to the daemon as one argument, never through a shell: a
# hostile session id cannot run anything here. MCP_REAPER_SUDO is split on
# purpose (e.g. "sudo -n") and comes from the host's configuration only.
# shellcheck disable=SC2086
${MCP_REAPER_SUDO:-} "$bin" "$@"
rc=$?

case $rc in
    0) ;;
    1) echo "mcp-reaper: no trees for session $id (host pid $host_pid)" >&2 ;;
    3) echo "mcp-reaper: daemon unreachable or refused; session $id not released" >&2 ;;
    *) echo "mcp-reaper: release for session $id failed with status $rc" >&2 ;;
esac

[ "${MCP_REAPER_HOOK_STRICT:-0}" = 1 ] && exit "$rc"
exit 0
