"""Hostile clients for the suite (``audiomemory.bench.attacks``): each returns its figures and ``as_expected``.

A caller that never reads its responses cannot be written with grpcio (its transport takes what the
server sends into its own window), so ``NonReader`` speaks HTTP/2 through ``h2`` on a socket: it announces
a stream window of 0 (SETTINGS_INITIAL_WINDOW_SIZE), sends a whole job, and never grants a byte of
window, so the server's first response cannot leave; it then watches for the server ending the stream
(RST_STREAM, trailers with END_STREAM, or GOAWAY).
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
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    Event,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.settings import SettingCodes, Settings

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
        until: Callable[[orchestrator_pb2.CreateImageResponse], bool] | None = None,
        reel: bool = False) -> tuple[str, str, float]:
    """Run a CreateImage (``reel``: a CreateReel); read its responses (until ``until`` says stop: then cancel).
    (code, details, s)."""
    start = time.monotonic()
    stub = orchestrator_pb2_grpc.OrchestratorStub(channel)
    call = (stub.CreateReel if reel else stub.CreateImage)(requests, timeout=timeout)
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


class NonReader:
    """One CreateImage over an HTTP/2 connection (``h2``) whose stream window is 0: the server can send it nothing.

    The connection's SETTINGS announce SETTINGS_INITIAL_WINDOW_SIZE 0 and no push; received data is never
    acknowledged, so the window never opens. h2 answers the server's SETTINGS and PINGs itself.
    """

    def __init__(self, address: str, ca: Path | None = None, token: str | None = None) -> None:
        host, port = address.rsplit(":", 1)
        raw = socket.create_connection((host, int(port)), timeout=10)
        if ca is not None:
            context = ssl.create_default_context(cafile=str(ca))
            context.set_alpn_protocols(["h2"])
            raw = context.wrap_socket(raw, server_hostname=host)
        self.sock: socket.socket = raw
        self.address, self.tls, self.token = address, ca is not None, token
        self.conn = H2Connection(H2Configuration(client_side=True))
        self.conn.local_settings = Settings(client=True, initial_values={
            SettingCodes.INITIAL_WINDOW_SIZE: 0, SettingCodes.ENABLE_PUSH: 0})
        self.stream = 1
        self.ended: str | None = None  # how the server ended the stream, once it has

    def send_job(self, song: bytes) -> None:
        """The connection's preface and SETTINGS; once the server's SETTINGS came, the job's one stream."""
        self.conn.initiate_connection()
        self._flush()
        if not any(isinstance(event, RemoteSettingsChanged) for event in self._events(10.0)):
            raise ConnectionError(f"{self.address} sent no SETTINGS within 10 s")
        headers = [(":method", "POST"), (":scheme", "https" if self.tls else "http"), (":path", CREATE_IMAGE),
                   (":authority", self.address), ("content-type", "application/grpc"), ("te", "trailers")]
        if self.token:
            headers.append(("authorization", f"Bearer {self.token}"))
        messages = [options(filename="song.wav").SerializeToString(), chunk(song).SerializeToString()]
        body = b"".join(b"\x00" + struct.pack(">I", len(m)) + m for m in messages)  # gRPC: flag, length, message
        self.stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(self.stream, headers)
        sent = 0
        while sent < len(body) and self.ended is None:  # as the server's flow control allows
            room = min(self.conn.local_flow_control_window(self.stream), self.conn.max_outbound_frame_size)
            if room == 0:
                if not any(isinstance(event, WindowUpdated) for event in self._events(10.0)) and self.ended is None:
                    raise ConnectionError(f"{self.address} opened no window for the request within 10 s")
                continue
            piece = body[sent:sent + room]
            sent += len(piece)
            self.conn.send_data(self.stream, piece, end_stream=sent == len(body))
            self._flush()

    def _flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def _events(self, timeout: float) -> Iterator[Event]:
        """Events as they come for ``timeout`` seconds, or until one ends the stream (reading grants no window)."""
        deadline = time.monotonic() + timeout
        while self.ended is None and (left := deadline - time.monotonic()) > 0:
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            if not pending and not select.select([self.sock], [], [], left)[0]:
                continue
            data = self.sock.recv(65536)
            if not data:
                return
            events = self.conn.receive_data(data)
            self._flush()  # h2's acknowledgements of SETTINGS and PING
            for event in events:
                self.ended = self.ended or self._ending(event)
            yield from events

    def _ending(self, event: Event) -> str | None:
        if isinstance(event, StreamReset) and event.stream_id == self.stream:
            return "RST_STREAM"
        if (isinstance(event, ResponseReceived | TrailersReceived) and event.stream_id == self.stream
                and event.stream_ended is not None):
            return "trailers"
        if isinstance(event, ConnectionTerminated):
            return "GOAWAY"
        return None

    def wait_end(self, timeout: float) -> str | None:
        """How the server ended the stream within ``timeout`` s (``RST_STREAM``/``trailers``/``GOAWAY``), or None."""
        for _ in self._events(timeout):
            pass
        return self.ended

    def close(self) -> None:
        self.sock.close()
