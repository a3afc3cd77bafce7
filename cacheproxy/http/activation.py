"""Listening sockets handed over by systemd socket activation (the sd_listen_fds protocol).

With a socket unit, systemd holds the port: connections made while the proxy restarts or
upgrades wait in the socket's queue instead of being refused, and the proxy needs no right to
bind a privileged port.
"""

from __future__ import annotations

import os
import socket

from cacheproxy.errors import ActivationError

_FIRST_FD = 3  # SD_LISTEN_FDS_START


def inherited_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """The listening sockets systemd passed to this process; empty when it passed none.

    The variables are removed once read, as sd_listen_fds(unset_environment=1) does, so a
    child process cannot mistake them for its own."""
    env = os.environ if environ is None else environ
    count, pid = env.get("LISTEN_FDS"), env.get("LISTEN_PID")
    if count is None:
        return []
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(name, None)
    # The variables are inherited by every descendant; only the process named owns the fds.
    if pid is not None and pid != str(os.getpid()):
        return []
    try:
        fds = range(_FIRST_FD, _FIRST_FD + int(count))
    except ValueError:
        raise ActivationError(f"LISTEN_FDS={count!r} is not a number") from None
    sockets = []
    for fd in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ActivationError(f"file descriptor {fd} is not a socket: {exc.strerror}") from None
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ActivationError(
                f"file descriptor {fd} is not a TCP socket (use ListenStream= with an address)"
            )
        sock.setblocking(False)
        sockets.append(sock)
    return sockets
