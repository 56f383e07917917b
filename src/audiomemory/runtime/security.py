"""Transport security and caller identity: TLS (and mTLS) for servers and channels, bearer tokens.

- ``server_credentials(cert, key, client_ca)`` — TLS for a server; with ``client_ca`` every client must
  present a certificate that CA signed (mTLS). The files are read again on a new connection whenever
  they changed on disk, so a rotated certificate (cert-manager renews the Secret's files in place)
  is served without a restart.
- ``channel_credentials(ca, cert, key)`` — a client's: trust ``ca`` (else the system's roots), and
  present ``cert``/``key`` when the server asks (mTLS).
- ``open_channel(target, ...)`` — an insecure or a TLS channel; ``token`` adds ``authorization: Bearer``
  to every call (only over TLS: a token never travels in the clear).
- ``TokenFile`` — the tokens a server accepts: one per line, an optional name after a space, ``#``
  comments; each at least ``MIN_TOKEN_LENGTH`` characters; re-read when the file changes, and none
  accepted while it is missing, unreadable or invalid (fail closed); compared in constant time; only
  names ever logged.
- ``Throttle`` — failed token attempts counted per peer host, bounded in memory: past a few a minute a
  host's failed attempts are refused at once with a retry hint that grows while they go on.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
import time
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from audiomemory.runtime.errors import FailedPrecondition

log = logging.getLogger("audiomemory.security")
AUTHORIZATION = "authorization"
MIN_TOKEN_LENGTH = 32  # characters: 32 random ones are far beyond guessing, throttled or not


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FailedPrecondition(f"{what}: cannot read {str(path)!r} ({exc.strerror or exc})") from None


@dataclass
class _Files:
    paths: tuple[Path, ...]
    stamps: tuple[float, ...] = ()

    def changed(self) -> bool:
        try:
            stamps = tuple(os.stat(p).st_mtime_ns for p in self.paths)
        except OSError:
            return False  # mid-rotation: keep serving the last good pair
        if stamps == self.stamps:
            return False
        self.stamps = stamps
        return True


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    """TLS for a server (mTLS with ``client_ca``); certificate files re-read when they change."""
    files = _Files(tuple(p for p in (cert, key, client_ca) if p is not None))
    files.changed()

    def configuration() -> Any:
        pair = [(_read(key, "tls_key"), _read(cert, "tls_cert"))]
        roots = _read(client_ca, "tls_client_ca") if client_ca is not None else None
        return grpc.ssl_server_certificate_configuration(pair, root_certificates=roots)

    initial = configuration()
    lock = threading.Lock()

    def fetch() -> Any:
        with lock:
            if not files.changed():
                return None  # keep the current configuration
            try:
                log.info("TLS certificate files changed: serving the new ones to new connections")
                return configuration()
            except FailedPrecondition as exc:
                log.warning("TLS certificate files changed but cannot be read yet: %s", exc)
                return None

    return grpc.dynamic_ssl_server_credentials(initial, fetch, require_client_authentication=client_ca is not None)


def channel_credentials(ca: Path | None = None, cert: Path | None = None, key: Path | None = None
                        ) -> grpc.ChannelCredentials:
    """A client's TLS: trust ``ca`` (None: the system's roots); present ``cert``/``key`` for mTLS."""
    if (cert is None) != (key is None):
        raise FailedPrecondition("tls_cert and tls_key go together: give both for a client certificate, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "tls_ca") if ca is not None else None,
        private_key=_read(key, "tls_key") if key is not None else None,
        certificate_chain=_read(cert, "tls_cert") if cert is not None else None,
    )


class _Bearer(grpc.AuthMetadataPlugin):
    def __init__(self, token: str) -> None:
        self._metadata = ((AUTHORIZATION, f"Bearer {token}"),)

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback(self._metadata, None)


def open_channel(
    target: str, *, tls: bool = False, ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
    token: str | None = None, options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to ``target``: plaintext, or TLS when ``tls`` or a ``ca``/``cert`` is given; ``token``
    rides on every call as ``authorization: Bearer`` (TLS only)."""
    if not (tls or ca or cert):
        if token:
            raise FailedPrecondition("a token is only sent over TLS: give the server's CA (--tls-ca)")
        return grpc.insecure_channel(target, options=list(options))
    credentials = channel_credentials(ca, cert, key)
    if token:
        credentials = grpc.composite_channel_credentials(credentials, grpc.metadata_call_credentials(_Bearer(token)))
    return grpc.secure_channel(target, credentials, options=list(options))


class TokenFile:
    """Accepted bearer tokens, from a file re-read when it changes (one per line: ``TOKEN [NAME]``).

    Fails closed: while the file is missing, unreadable or holds an invalid line, no token is accepted
    (a withdrawn file withdraws its tokens); at start-up those are a ``FailedPrecondition``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._tokens = self._load()
        if not self._tokens:
            raise FailedPrecondition(f"auth_tokens: {str(self.path)!r} holds no token (one per line)")

    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size  # ctime: a chmod; ino: a file swapped in

    def _load(self) -> list[tuple[bytes, str]]:
        """The file's tokens; ``FailedPrecondition`` naming the file and line (never a token) when invalid."""
        where = f"auth_tokens: {str(self.path)!r}"
        try:
            content = _read(self.path, "auth_tokens").decode()
        except UnicodeDecodeError:
            raise FailedPrecondition(f"{where} is not UTF-8 text") from None
        tokens = []
        for number, line in enumerate(content.splitlines(), start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            token, _, name = text.partition(" ")
            if len(token) < MIN_TOKEN_LENGTH:
                raise FailedPrecondition(f"{where} line {number}: a token must be at least {MIN_TOKEN_LENGTH} "
                                         f"characters, this one has {len(token)} (make one with `openssl rand "
                                         "-hex 32`)")
            if not (token.isascii() and token.isprintable()):
                raise FailedPrecondition(f"{where} line {number}: a token is printable ASCII (it travels in a "
                                         "gRPC header)")
            tokens.append((token.encode(), name.strip() or f"line {number}"))
        return tokens

    def _reload(self) -> None:
        """Re-read after a change; any failure leaves no token accepted until the file is right again."""
        try:
            self._tokens = self._load()
        except FailedPrecondition as exc:
            self._tokens = []
            log.error("%s: no token is accepted until it is fixed", exc)
            return
        log.info("auth tokens re-read from %s: %d token(s)", self.path, len(self._tokens))

    def who(self, presented: str) -> str | None:
        """The name of the token ``presented`` matches, or None; the file is re-read if it changed."""
        with self._lock:
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                self._reload()
            tokens = list(self._tokens)
        given = presented.encode()
        found = None
        for token, name in tokens:  # every token is compared, whichever matches: no timing tells which
            if hmac.compare_digest(token, given):
                found = name
        return found


def peer_host(peer: str) -> str:
    """The host part of gRPC's ``context.peer()`` (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``, ``ipv6:%5B::1%5D:5``),
    without the port; an IPv6 host as its /64 (one machine may hold a whole /64), an IPv4-mapped one as
    its IPv4 address; anything else as it came."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0].strip("[]") if rest.startswith("[") else rest
        try:
            address = ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            return host
        if address.ipv4_mapped:  # an IPv4 caller of a dual-stack [::] server
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return peer


class Throttle:
    """Failed token attempts per peer host: more than ``limit`` within ``window`` seconds and the host's
    next failed attempts are refused at once for ``first`` seconds, doubling with each one (at most
    ``cap``); a failure after a quiet window starts over. At most ``hosts`` hosts are remembered (the
    least recently failed are forgotten), so a flood of addresses costs bounded memory."""

    def __init__(self, limit: int = 5, window: float = 60.0, first: float = 1.0, cap: float = 300.0,
                 hosts: int = 4096, clock: Any = time.monotonic) -> None:
        self.limit, self.window, self.first, self.cap, self.hosts = limit, window, first, cap, hosts
        self._clock = clock
        self._state: OrderedDict[str, tuple[deque[float], float, float]] = OrderedDict()  # times, until, penalty
        self._lock = threading.Lock()

    def failed(self, host: str) -> float:
        """Count a failed attempt from ``host``; return how long it must wait (0: not throttled, refuse plainly)."""
        now = self._clock()
        with self._lock:
            fresh: tuple[deque[float], float, float] = (deque(maxlen=self.limit + 1), 0.0, 0.0)
            times, until, penalty = self._state.pop(host, fresh)  # popped: put back as the most recent
            times.append(now)
            over = len(times) > self.limit and times[0] > now - self.window
            penalty = min(self.cap, max(self.first, penalty * 2)) if over or now < until else 0.0
            self._state[host] = (times, now + penalty if penalty else until, penalty)
            while len(self._state) > self.hosts:
                self._state.popitem(last=False)
            return penalty

    def __len__(self) -> int:
        return len(self._state)
