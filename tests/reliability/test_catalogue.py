"""The bad-input catalogue (``catalogue.py``, ``catalogue_front.py``) against the real tiny services.

Each named case gets exactly the status its service deliberately answers, a message that names the
field without echoing the payload, and leaves the service answering health SERVING.
"""

from __future__ import annotations

import grpc
import pytest

from .catalogue import AUDIO_ENCODER, GENERATOR, OK, SEPARATOR, TEXT_ENCODER, Case
from .catalogue_front import ORCHESTRATOR
from .conftest import FIGURES, assert_serving

CASES = [*SEPARATOR, *AUDIO_ENCODER, *TEXT_ENCODER, *GENERATOR, *ORCHESTRATOR]
MAX_MESSAGE = 400  # a sentence or two: never a payload


def test_the_catalogue_holds_at_least_forty_distinct_cases() -> None:
    names = [case.name for case in CASES]
    assert len(names) >= 40 and len(set(names)) == len(names)
    assert {case.service for case in CASES} == {"separator", "audio_encoder", "text_encoder", "generator",
                                                 "orchestrator"}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_its_status_naming_the_field_and_the_service_keeps_serving(
    case: Case, channels: dict[str, grpc.Channel]
) -> None:
    channel = channels[case.service]
    if case.code == OK:
        answer = case.call(channel)
        assert case.check is not None and case.check(answer)
    else:
        with pytest.raises(grpc.RpcError) as caught:
            case.call(channel)
        error = caught.value
        details = error.details() or ""
        assert error.code() == case.code, f"{error.code()}: {details}"
        assert case.field in details, details
        assert len(details) < MAX_MESSAGE, details
    assert_serving(channel)
    FIGURES["catalogue"][case.service] += 1
