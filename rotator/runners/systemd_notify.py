"""systemd's service notification protocol (sd_notify(3)) for ``Type=notify`` units, without libsystemd.

The protocol is one datagram per message to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path,
or ``@name`` in the abstract namespace). rotator sends ``READY=1`` once the daemon serves,
``WATCHDOG=1`` while its own watchdog sees progress (``WatchdogSec=``: systemd kills and, with
``Restart=on-failure``, restarts a daemon whose pings stop), and ``STOPPING=1`` when it shuts
down. Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.

Hand-written rather than a dependency: the protocol is these few lines, and the packages that wrap
it (``sdnotify``, ``systemd-python``) add nothing rotator uses; the latter needs libsystemd's headers
to build.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["SystemdNotify"]

logger = logging.getLogger("rotator.daemon")

_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SystemdNotify:
    """The daemon's channel to systemd: the socket address and the watchdog interval, if any."""

    #: the longest one notification may wait for room in systemd's socket queue
    send_timeout_s = 1.0

    def __init__(self, address: str | None, watchdog_s: float | None) -> None:
        self.address = address
        #: how often to send WATCHDOG=1 (half of WatchdogSec=, as sd_watchdog_enabled(3) advises);
        #: None: no watchdog asked for
        self.watchdog_s = watchdog_s
        self._last_ping = 0.0
        self._failed = False

    @classmethod
    def from_environment(cls) -> SystemdNotify:
        """Read and remove ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``.

        Removed so that no child (influxctl, a command hook) inherits them: a child that talks to
        the socket could claim readiness or feed the watchdog on rotator's behalf.
        """
        env = {name: os.environ.pop(name, None) for name in _ENV}
        address = env["NOTIFY_SOCKET"]
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # the abstract namespace
        elif address and not address.startswith("/"):
            logger.warning("NOTIFY_SOCKET=%r is neither a path nor @name; not notifying systemd", address)
            address = None
        watchdog_s = None
        usec, pid = env["WATCHDOG_USEC"], env["WATCHDOG_PID"]
        if usec and (not pid or pid == str(os.getpid())):
            try:
                watchdog_s = int(usec) / 2_000_000
            except ValueError:
                logger.warning("WATCHDOG_USEC=%r is not a number of microseconds; no watchdog pings", usec)
        return cls(address or None, watchdog_s if address and watchdog_s and watchdog_s > 0 else None)

    def send(self, message: str) -> bool:
        """Send ``message`` (``KEY=value`` lines); False when not under systemd or the send failed.

        A failure is logged once and never raised: systemd being unreachable must not stop rotations.
        """
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | getattr(socket, "SOCK_CLOEXEC", 0)) as sock:
                # A datagram to a socket whose queue is full blocks (systemd not reading: a hung PID 1, a
                # flood): bounded, the watchdog thread goes on and tries again at its next pass.
                sock.settimeout(self.send_timeout_s)
                sock.connect(self.address)
                sock.sendall(message.encode())
        except OSError as exc:
            if not self._failed:
                logger.warning("cannot notify systemd at %s: %s", self.address.replace("\0", "@"), exc)
                self._failed = True
            return False
        return True

    def ping(self) -> bool:
        """WATCHDOG=1, at most once per ``watchdog_s``; False when none is due or asked for."""
        if self.watchdog_s is None:
            return False
        now = time.monotonic()
        if now - self._last_ping < self.watchdog_s:
            return False
        # Stamped only when sent: a ping that failed (nobody listening, a queue full past send_timeout_s)
        # is tried again at the next pass, not half a WatchdogSec later, which with one more lost ping
        # could miss the deadline.
        sent = self.send("WATCHDOG=1")
        if sent:
            self._last_ping = now
        return sent
