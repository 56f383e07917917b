"""Hostile clients for the suite (``audiomemory.bench.attacks``): each returns its figures and ``as_expected``.

A caller that never reads its responses cannot be written with grpcio (its transport takes what the
server sends into its own window), so ``NonReader`` speaks HTTP/2 itself on a socket: it announces a
stream window of 0 (SETTINGS_INITIAL_WINDOW_SIZE), sends a whole job, and never grants a byte of
window, so the server's first response cannot leave; it then watches the socket for the server ending
the stream (RST_STREAM, or trailers with END_STREAM).
"""

from __future__ import annotations

import io
import select
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import soundfile as sf

from audiomemory.v1 import orchestrator_pb2, orchestrator_pb2_grpc

CREATE_IMAGE = "/audiomemory.v1.Orchestrator/CreateImage"
Requests = Iterator[orchestrator_pb2.CreateImageRequest]


def options(**kwargs: Any) -> orchestrator_pb2.CreateImageRequest:
    return orchestrator_pb2.CreateImageRequest(options=orchestrator_pb2.CreateImageOptions(
        lyrics="la", steps=1, seed=1, **kwargs))


def chunk(data: bytes) -> orchestrator_pb2.CreateImageRequest:
    return orchestrator_pb2.CreateImageRequest(file_chunk=data)


def held_open(first: list[orchestrator_pb2.CreateImageRequest], stop: threading.Event) -> Requests:
    """``first``, then nothing until ``stop`` (a caller that stalls)."""
    yield from first
    stop.wait()


def flac(rate: int, seconds: float, channels: int = 2) -> bytes:
    """Silence as 16-bit FLAC at ``rate`` Hz: a few bytes a block, whatever the length."""
    buf = io.BytesIO()
    block = np.zeros((rate * 10, channels), np.int16)
    with sf.SoundFile(buf, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as out:
        left = int(rate * seconds)
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
    return buf.getvalue()


def wav_header(seconds: float, rate: int = 48_000, channels: int = 2, upto: int = 300_000) -> bytes:
    """The first ``upto`` bytes of a 16-bit WAV whose header promises ``seconds`` (the rest never comes)."""
    data = int(seconds * rate) * channels * 2
    head = (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate,
            rate * channels * 2, channels * 2, 16) + b"data" + struct.pack("<I", data))
    return head + bytes(upto - len(head))


def job(channel: grpc.Channel, requests: Requests, *, timeout: float = 120,
        until: Callable[[orchestrator_pb2.CreateImageResponse], bool] | None = None) -> tuple[str, str, float]:
    """Run a CreateImage; read its responses (until ``until`` says stop: then cancel). (code, details, s)."""
    start = time.monotonic()
    call = orchestrator_pb2_grpc.OrchestratorStub(channel).CreateImage(requests, timeout=timeout)
    try:
        for response in call:
            if until is not None and until(response):
                call.cancel()
                return "CANCELLED_BY_ATTACKER", "", time.monotonic() - start
    except grpc.RpcError as exc:
        return exc.code().name, (exc.details() or "")[:200], time.monotonic() - start
    return "OK", "", time.monotonic() - start


def in_parallel(calls: list[Callable[[], tuple[str, str, float]]]) -> list[tuple[str, str, float]]:
    out: list[tuple[str, str, float]] = [("", "", 0.0)] * len(calls)

    def run(i: int) -> None:
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def codes(results: list[tuple[str, str, float]]) -> dict[str, int]:
    return dict(Counter(code for code, _, _ in results))


# --- a caller that never reads: HTTP/2 by hand (RFC 9113 frames, RFC 7541 literal headers) ---

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0, 1, 3, 4, 7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
INITIAL_WINDOW_SIZE, ENABLE_PUSH = 0x4, 0x2
MAX_FRAME = 16_384  # SETTINGS_MAX_FRAME_SIZE's initial value


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _hpack_int(value: int) -> bytes:
    if value < 127:
        return bytes([value])
    out, value = bytearray([127]), value - 127
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    return bytes(out + bytes([value]))


def _headers(pairs: list[tuple[str, str]]) -> bytes:
    """Literal header fields without indexing, new names, no Huffman."""
    return b"".join(b"\x00" + _hpack_int(len(k)) + k.encode() + _hpack_int(len(v)) + v.encode() for k, v in pairs)


class NonReader:
    """One CreateImage over a raw HTTP/2 connection whose stream window is 0: the server can send it nothing."""

    def __init__(self, address: str, ca: Path | None = None, token: str | None = None) -> None:
        host, port = address.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=10)
        if ca is not None:
            context = ssl.create_default_context(cafile=str(ca))
            context.set_alpn_protocols(["h2"])
            raw = context.wrap_socket(raw, server_hostname=host)
        self.sock: socket.socket = raw
        self.address, self.tls, self.token = address, ca is not None, token

    def send_job(self, song: bytes) -> None:
        settings = struct.pack(">HI", INITIAL_WINDOW_SIZE, 0) + struct.pack(">HI", ENABLE_PUSH, 0)
        headers = [(":method", "POST"), (":scheme", "https" if self.tls else "http"), (":path", CREATE_IMAGE),
                   (":authority", self.address), ("content-type", "application/grpc"), ("te", "trailers")]
        if self.token:
            headers.append(("authorization", f"Bearer {self.token}"))
        messages = [options(filename="song.wav").SerializeToString(), chunk(song).SerializeToString()]
        body = b"".join(b"\x00" + struct.pack(">I", len(m)) + m for m in messages)
        self.sock.sendall(PREFACE + _frame(SETTINGS, 0, 0, settings))
        self._ack_settings()
        pieces = [body[i:i + MAX_FRAME] for i in range(0, len(body), MAX_FRAME)]
        self.sock.sendall(_frame(HEADERS, END_HEADERS, 1, _headers(headers)) + b"".join(
            _frame(DATA, END_STREAM if i == len(pieces) - 1 else 0, 1, piece) for i, piece in enumerate(pieces)))

    def _ack_settings(self) -> None:
        """Read up to the server's SETTINGS and acknowledge them (else it may close the connection for that)."""
        for kind, flags, _, _ in self._frames(10.0):
            if kind == SETTINGS and not flags & ACK:
                self.sock.sendall(_frame(SETTINGS, ACK, 0, b""))
                return

    def _frames(self, timeout: float) -> Iterator[tuple[int, int, int, bytes]]:
        """Frames as they come for ``timeout`` seconds (reading the socket grants no window)."""
        deadline, buf = time.monotonic() + timeout, b""
        while (left := deadline - time.monotonic()) > 0:
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            if not pending and not select.select([self.sock], [], [], left)[0]:
                continue
            data = self.sock.recv(65536)
            if not data:
                return
            buf += data
            while len(buf) >= 9 and len(buf) >= 9 + (size := int.from_bytes(buf[:3], "big")):
                kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                yield kind, flags, stream, buf[9:9 + size]
                buf = buf[9 + size:]

    def wait_end(self, timeout: float) -> str | None:
        """How the server ended stream 1 within ``timeout`` s (``RST_STREAM``/``trailers``/``GOAWAY``), or None."""
        for kind, flags, stream, _ in self._frames(timeout):
            if stream == 1 and kind == RST_STREAM:
                return "RST_STREAM"
            if stream == 1 and kind == HEADERS and flags & END_STREAM:
                return "trailers"
            if kind == GOAWAY:
                return "GOAWAY"
        return None

    def close(self) -> None:
        self.sock.close()
