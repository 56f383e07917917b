"""Who gets in: every way of calling a secured stack without the right credentials, many times, with figures.

The stack is what ``audiomemory up --models tiny --tls-cert … --tls-key … --tls-ca … --auth-tokens …``
runs (``cli.serve.secured``): TLS on every service, mTLS between the orchestrator and the model services,
bearer tokens at the orchestrator. Certificates come from ``openssl`` (``audiomemory.bench.certs``: a CA,
a certificate for 127.0.0.1 signed by it, and an outsider CA with a client certificate of its own).
Each case runs ``--repeat`` times and records the status codes it got; a case passes when every attempt
got one of its expected codes. After all of them a token holder's Describe and a whole job still succeed and
health says SERVING: no refusal hurt the server.

    python scripts/reliability_auth.py --repeat 50

Prints one line per case and a last JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # every refused handshake is logged at INFO otherwise
from collections import Counter  # (imports after GRPC_VERBOSITY: grpc reads it on import)
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc

from audiomemory.bench.certs import Certs, make_certs
from audiomemory.cli.common import stack_overrides
from audiomemory.cli.serve import secured
from audiomemory.client import Client
from audiomemory.runtime.security import open_channel
from audiomemory.stack import LocalStack
from audiomemory.v1 import common_pb2, orchestrator_pb2_grpc, separator_pb2_grpc

Attempt = Callable[[], grpc.StatusCode]
OK, GONE, GUESS = ("tester-" + "0" * 32, "leaver-" + "1" * 32, "guesser-" + "2" * 32)  # tokens: 32+ characters


def describe(channel_factory: Callable[[], grpc.Channel], stub: type = orchestrator_pb2_grpc.OrchestratorStub
             ) -> Attempt:
    def attempt() -> grpc.StatusCode:
        with channel_factory() as channel:
            try:
                stub(channel).Describe(common_pb2.DescribeRequest(), timeout=10)
            except grpc.RpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK
    return attempt


def cases(stack: LocalStack, certs: Certs) -> dict[str, tuple[Attempt, tuple[grpc.StatusCode, ...]]]:
    front, model = stack.address, stack.services["separator"].address
    # Past 5 failed token attempts a minute from one host, its failed attempts get RESOURCE_EXHAUSTED.
    unauth = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED)
    unavailable = (grpc.StatusCode.UNAVAILABLE,)
    return {
        "no token (Describe)": (describe(lambda: open_channel(front, ca=certs.ca)), unauth),
        "wrong token": (describe(lambda: open_channel(front, ca=certs.ca, token=GUESS)), unauth),
        "removed token (after reload)": (describe(lambda: open_channel(front, ca=certs.ca, token=GONE)), unauth),
        "plaintext to the TLS port": (describe(lambda: grpc.insecure_channel(front)), unavailable),
        "server certificate from another CA": (describe(lambda: open_channel(front, ca=certs.other_ca, token=OK)),
                                               unavailable),
        "model service without a client certificate": (
            describe(lambda: open_channel(model, ca=certs.ca), separator_pb2_grpc.SeparatorStub), unavailable),
        "model service, client certificate from another CA": (
            describe(lambda: open_channel(model, ca=certs.ca, cert=certs.other_cert, key=certs.other_key),
                     separator_pb2_grpc.SeparatorStub), unavailable),
        "the right token": (describe(lambda: open_channel(front, ca=certs.ca, token=OK)), (grpc.StatusCode.OK,)),
    }


def song() -> bytes:
    t = np.arange(2 * 22050) / 22050
    buf = io.BytesIO()
    sf.write(buf, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050, format="WAV")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="audiomemory-auth-"))
    certs = make_certs(work)
    tokens = work / "tokens"
    tokens.write_text(f"{OK} tester\n{GONE} leaver\n")
    overrides = secured(stack_overrides("tiny"), certs.cert, certs.key, certs.ca, tokens)
    with LocalStack(overrides) as stack:
        tokens.write_text(f"{OK} tester\n")  # GONE is withdrawn: the file is re-read when it changes
        stamp = time.time() + 5
        os.utime(tokens, (stamp, stamp))
        report: dict[str, dict[str, object]] = {}
        passed = True
        for name, (attempt, expected) in cases(stack, certs).items():
            got = Counter(attempt().name for _ in range(args.repeat))
            passed &= set(got) <= {code.name for code in expected}
            report[name] = {"expected": [code.name for code in expected], "got": dict(got)}
            print(f"{name:52} {dict(got)}", flush=True)
        with open_channel(stack.address, ca=certs.ca) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        with Client(stack.address, tls_ca=certs.ca, token=OK) as client:
            job_ok = client.generate(song(), lyrics="after the refusals", seed=1, steps=1).png[:4] == b"\x89PNG"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)
    print(json.dumps({"repeat": args.repeat, "cases": report, "all_as_expected": passed, "health_after": status,
                      "job_after_ok": job_ok}), flush=True)


if __name__ == "__main__":
    main()
