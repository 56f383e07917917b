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
  comments; re-read when the file changes; compared in constant time; only names ever logged.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from audiomemory.runtime.errors import FailedPrecondition

log = logging.getLogger("audiomemory.security")
AUTHORIZATION = "authorization"


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
    """Accepted bearer tokens, from a file re-read when it changes (one per line: ``TOKEN [NAME]``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._files = _Files((self.path,))
        self._tokens: list[tuple[bytes, str]] = []
        self._lock = threading.Lock()
        self._files.changed()
        self._load()
        if not self._tokens:
            raise FailedPrecondition(f"auth_tokens: {str(self.path)!r} holds no token (one per line)")

    def _load(self) -> None:
        tokens = []
        for number, line in enumerate(_read(self.path, "auth_tokens").decode().splitlines(), start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            token, _, name = text.partition(" ")
            tokens.append((token.encode(), name.strip() or f"line {number}"))
        self._tokens = tokens

    def who(self, presented: str) -> str | None:
        """The name of the token ``presented`` matches, or None; the file is re-read if it changed."""
        with self._lock:
            if self._files.changed():
                self._load()
                log.info("auth tokens re-read from %s: %d token(s)", self.path, len(self._tokens))
            tokens = list(self._tokens)
        given = presented.encode()
        found = None
        for token, name in tokens:  # every token is compared, whichever matches: no timing tells which
            if hmac.compare_digest(token, given):
                found = name
        return found
