"""TLS, mTLS and bearer tokens on a real service (the tiny text encoder): who gets in, who is refused how."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import health

from audiomemory.bench.certs import Certs, make_certs
from audiomemory.runtime.errors import FailedPrecondition
from audiomemory.runtime.security import Throttle, TokenFile, open_channel, peer_host
from audiomemory.runtime.service import RunningService
from audiomemory.stack import definition
from audiomemory.v1 import common_pb2, text_encoder_pb2, text_encoder_pb2_grpc

SERVICE = "audiomemory.v1.TextEncoder"
ALPHA = "s3cret-alpha-0123456789abcdef0123456789"  # tokens are at least 32 characters
BETA = "s3cret-beta-0123456789abcdef0123456789ab"
GUESS = "a-guessed-token-0123456789abcdef0123"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# who may call\n{ALPHA} alice\n{BETA} bob\n")
    return path


@pytest.fixture
def secure(certs: Certs, tokens: Path, tiny_clip: dict[str, Any],
           start_services: Callable[..., RunningService]) -> Iterator[Callable[..., RunningService]]:
    def start(**extra: Any) -> RunningService:
        d = definition("text_encoder")
        settings = {"port": 0, "tls_cert": certs.cert, "tls_key": certs.key, **tiny_clip, **extra}
        return start_services(d, d.config_class(**settings))

    yield start


def describe(channel: grpc.Channel) -> grpc.StatusCode:
    try:
        text_encoder_pb2_grpc.TextEncoderStub(channel).Describe(common_pb2.DescribeRequest(), timeout=10)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def encode(channel: grpc.Channel) -> tuple[grpc.StatusCode, str]:
    try:
        list(text_encoder_pb2_grpc.TextEncoderStub(channel).Encode(text_encoder_pb2.EncodeRequest(texts=["hi"]),
                                                                   timeout=10))
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def test_tokens_are_required_over_tls_health_stays_open_and_a_removed_token_stops_working(
    secure: Callable[..., RunningService], certs: Certs, tokens: Path
) -> None:
    svc = secure(auth_tokens=tokens)
    with open_channel(svc.address, ca=certs.ca) as anonymous:
        assert health(anonymous, SERVICE) == 1  # SERVING, no token needed for probes
        assert describe(anonymous) is grpc.StatusCode.UNAUTHENTICATED
        code, details = encode(anonymous)
        assert code is grpc.StatusCode.UNAUTHENTICATED and "missing token" in details
    with open_channel(svc.address, ca=certs.ca, token="guess") as wrong:
        code, details = encode(wrong)
        assert code is grpc.StatusCode.UNAUTHENTICATED and "unknown token" in details and "guess" not in details
    with open_channel(svc.address, ca=certs.ca, token=BETA) as bob:
        assert describe(bob) is grpc.StatusCode.OK and encode(bob)[0] is grpc.StatusCode.OK
        tokens.write_text(f"{ALPHA} alice\n")  # bob's token is withdrawn: the file is re-read on change
        stamp = time.time() + 5
        os.utime(tokens, (stamp, stamp))
        assert encode(bob)[0] is grpc.StatusCode.UNAUTHENTICATED
    with open_channel(svc.address, ca=certs.ca, token=ALPHA) as alice:
        assert encode(alice)[0] is grpc.StatusCode.OK  # and the server kept serving throughout


def test_plaintext_and_an_untrusted_ca_cannot_talk_to_a_tls_port(
    secure: Callable[..., RunningService], certs: Certs
) -> None:
    svc = secure()
    with grpc.insecure_channel(svc.address) as plaintext:
        assert describe(plaintext) is grpc.StatusCode.UNAVAILABLE
    with open_channel(svc.address, ca=certs.other_ca) as untrusted:
        assert describe(untrusted) is grpc.StatusCode.UNAVAILABLE
    with open_channel(svc.address, ca=certs.ca) as trusted:
        assert describe(trusted) is grpc.StatusCode.OK


def test_mtls_admits_only_clients_with_a_certificate_from_its_ca(
    secure: Callable[..., RunningService], certs: Certs
) -> None:
    svc = secure(tls_client_ca=certs.ca)
    with open_channel(svc.address, ca=certs.ca) as no_certificate:
        assert describe(no_certificate) is grpc.StatusCode.UNAVAILABLE
    with open_channel(svc.address, ca=certs.ca, cert=certs.other_cert, key=certs.other_key) as outsider:
        assert describe(outsider) is grpc.StatusCode.UNAVAILABLE
    with open_channel(svc.address, ca=certs.ca, cert=certs.cert, key=certs.key) as member:
        assert describe(member) is grpc.StatusCode.OK


def test_a_token_is_never_sent_in_the_clear_and_half_a_tls_pair_is_refused(tiny_clip: dict[str, Any],
                                                                           certs: Certs) -> None:
    from audiomemory.runtime.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition, match="only sent over TLS"):
        open_channel("127.0.0.1:1", token="s3cret")
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        definition("text_encoder").config_class(tls_cert=certs.cert, **tiny_clip)
    with pytest.raises(ValueError, match="need TLS"):
        definition("text_encoder").config_class(auth_tokens=certs.ca, **tiny_clip)


def test_a_plaintext_health_port_answers_probes_and_nothing_else_while_the_main_port_needs_mtls(
    secure: Callable[..., RunningService], certs: Certs
) -> None:
    # kubelet's gRPC probes do not speak TLS: health_port serves grpc.health.v1 in the clear, alone.
    svc = secure(tls_client_ca=certs.ca, health_port=0)
    assert svc.health_port
    with grpc.insecure_channel(f"127.0.0.1:{svc.health_port}") as plain:
        assert health(plain, SERVICE) == 1
        assert health(plain, "") == 1
        assert describe(plain) is grpc.StatusCode.UNIMPLEMENTED
    with grpc.insecure_channel(svc.address) as plain:
        assert describe(plain) is grpc.StatusCode.UNAVAILABLE


def test_a_deleted_tokens_file_accepts_no_token_until_it_is_back(
    secure: Callable[..., RunningService], certs: Certs, tokens: Path
) -> None:
    svc = secure(auth_tokens=tokens)
    saved = tokens.read_text()
    with open_channel(svc.address, ca=certs.ca, token=ALPHA) as alice:
        assert encode(alice)[0] is grpc.StatusCode.OK
        tokens.unlink()  # withdrawn: fail closed, not "keep the last tokens"
        assert encode(alice)[0] is grpc.StatusCode.UNAUTHENTICATED
        tokens.write_text(saved)
        assert encode(alice)[0] is grpc.StatusCode.OK
        tokens.write_text(f"{ALPHA} alice\nshort bob\n")  # an invalid file, too, accepts no token
        assert encode(alice)[0] is grpc.StatusCode.UNAUTHENTICATED


def test_a_token_shorter_than_32_characters_is_refused_at_load_naming_the_line(tmp_path: Path) -> None:
    short = "x" * 31
    path = tmp_path / "tokens"
    path.write_text(f"# who may call\n{ALPHA} alice\n{short} bob\n")
    with pytest.raises(FailedPrecondition, match="line 3: a token must be at least 32 characters, this one has 31"
                       ) as refused:
        TokenFile(path)
    assert short not in str(refused.value)
    path.write_text(f"{'x' * 32} bob\n")
    assert TokenFile(path).who("x" * 32) == "bob"


def guess_ten_times(address: str, certs: Certs, **options: Any) -> list[grpc.StatusCode]:
    with open_channel(address, ca=certs.ca, token=GUESS, options=list(options.items())) as guesser:
        return [encode(guesser)[0] for _ in range(10)]


def test_failed_token_attempts_are_throttled_and_logged_with_the_peer_never_the_token(
    secure: Callable[..., RunningService], certs: Certs, tokens: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="audiomemory")
    svc = secure(auth_tokens=tokens)
    codes = guess_ten_times(svc.address, certs)
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 5
    with open_channel(svc.address, ca=certs.ca, token=GUESS) as guesser:
        started = time.monotonic()
        code, details = encode(guesser)
        assert time.monotonic() - started < 1.0  # refused at once: no handler thread waits
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and "too many failed token attempts" in details
    with open_channel(svc.address, ca=certs.ca, token=ALPHA) as alice:
        assert encode(alice)[0] is grpc.StatusCode.OK  # a token holder behind the same address is never refused
    assert "from ipv4:127.0.0.1:" in caplog.text and "ipv4:127.0.0.1:" in caplog.text
    assert GUESS not in caplog.text and ALPHA not in caplog.text


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6(), reason="needs IPv6 loopback: ::1 is the second caller host on one machine")
def test_another_hosts_failures_do_not_count_against_this_one(
    secure: Callable[..., RunningService], certs: Certs, tokens: Path
) -> None:
    svc = secure(auth_tokens=tokens, host="[::]")  # IPv4 callers arrive as ::ffff:127.0.0.1, IPv6 as ::1
    port = svc.address.rsplit(":", 1)[1]
    assert guess_ten_times(f"127.0.0.1:{port}", certs)[-1] is grpc.StatusCode.RESOURCE_EXHAUSTED
    codes = guess_ten_times(f"[::1]:{port}", certs, **{"grpc.ssl_target_name_override": "localhost"})
    assert codes[:5] == [grpc.StatusCode.UNAUTHENTICATED] * 5  # its own count, not 127.0.0.1's


def test_the_throttle_grows_while_failures_go_on_forgets_after_a_quiet_window_and_stays_bounded() -> None:
    now = [0.0]
    throttle = Throttle(limit=5, window=60, first=1, cap=8, hosts=3, clock=lambda: now[0])
    assert [throttle.failed("h") for _ in range(9)] == [0] * 5 + [1, 2, 4, 8]
    now[0] += 100  # a quiet window: counted afresh
    assert throttle.failed("h") == 0
    for n in range(10):
        throttle.failed(f"flood-{n}")
    assert len(throttle) == 3
    assert peer_host("ipv4:10.1.2.3:5555") == "10.1.2.3"
    assert peer_host("ipv6:%5B2001:db8::1%5D:5555") == peer_host("ipv6:[2001:db8::ffff]:1") == "2001:db8::/64"
    assert peer_host("ipv6:[::ffff:10.1.2.3]:5555") == "10.1.2.3"
