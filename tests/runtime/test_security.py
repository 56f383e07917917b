"""TLS, mTLS and bearer tokens on a real service (the tiny text encoder): who gets in, who is refused how."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import health
from security_certs import Certs, make_certs

from audiomemory.runtime.security import open_channel
from audiomemory.runtime.service import RunningService
from audiomemory.stack import definition
from audiomemory.v1 import common_pb2, text_encoder_pb2, text_encoder_pb2_grpc

SERVICE = "audiomemory.v1.TextEncoder"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text("# who may call\ns3cret-alpha alice\ns3cret-beta bob\n")
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
    with open_channel(svc.address, ca=certs.ca, token="s3cret-beta") as bob:
        assert describe(bob) is grpc.StatusCode.OK and encode(bob)[0] is grpc.StatusCode.OK
        tokens.write_text("s3cret-alpha alice\n")  # bob's token is withdrawn: the file is re-read on change
        stamp = time.time() + 5
        os.utime(tokens, (stamp, stamp))
        assert encode(bob)[0] is grpc.StatusCode.UNAUTHENTICATED
    with open_channel(svc.address, ca=certs.ca, token="s3cret-alpha") as alice:
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
