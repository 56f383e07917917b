"""A job's options: checked before anything is uploaded or called, with every default resolved once.

- ``parse_options(msg, fusion, max_lyrics_chars)`` — the request's own limits (text lengths: the lyrics the
  orchestrator's ``max_lyrics_chars``, so that every record it writes reads back; window name, strength, the
  lyrics source) and the orchestrator's defaults (strength as float32, projection seed) → ``JobOptions``.
- ``check_with_services(opts, infos)`` — what only the services know: the generator's limits and
  defaults from its ``Describe`` (steps, guidance, size, schedulers; stated there once, enforced by the
  generator, checked here before the upload so a bad job costs nothing) and the text encoder's
  ``max_chars``, a transcriber for ``transcribe``; returns the lyrics window the text encoder will read ("" while
  the lyrics are still to be transcribed: ``transcript_window`` then makes it).
- ``parse_stem_weights(msg)`` — ``stem_weights``: known stems, each in [0, 4] → one weight per stem of
  ``STEM_ORDER`` (``None``: unweighted).
- ``resolved_request(sent, opts)`` — the options as sent with the orchestrator's defaults filled in:
  what an image's metadata records, so that sending it again with the same song reproduces the image.
- ``span_words(opts, infos, transcript)`` — the lyrics window of an image of a span (DESIGN.md §11): the
  transcript's segments or the timed lyric lines that start inside it, else the whole song's window.

A span (``CreateImageOptions.span``) is checked here for its shape and against the longest song; against the
song's own length once it is decoded (``timebins.check_span``). Timed lyrics (``timed_lyrics``) are lines with
finite, non-negative times, in order of their start, at most ``MAX_TIMED_LINES`` of them, their text (one
line each) counted against ``max_lyrics_chars``; ``lyrics`` must then be empty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from audiomemory.defaults import MAX_STEM_WEIGHT
from audiomemory.orchestrator.compatibility import Infos
from audiomemory.orchestrator.fusion import STEM_ORDER, Fusion, resolve_strength
from audiomemory.orchestrator.lyrics import WINDOWS, lyrics_window
from audiomemory.orchestrator.timebins import Span, bin_count, check_span
from audiomemory.runtime.errors import FailedPrecondition, InvalidInput, describe
from audiomemory.runtime.kinds import MODEL_KINDS
from audiomemory.runtime.transcript import Transcript
from audiomemory.v1 import common_pb2, generator_pb2, orchestrator_pb2

MAX_NEGATIVE_CHARS = 10_000
MAX_FILENAME_CHARS = 512
MAX_PIN_CHARS = 200  # a pin's identity (32 hex digits) and its description
#: Timed lyric lines a job takes: a line every 0.6 s of a 20-minute song. With ``max_lyrics_chars`` it keeps the
#: record (which holds the lines with their times, their text and its window) under what a reader takes back.
MAX_TIMED_LINES = 2000
#: ``CreateImageOptions.lyrics_source`` → the source a job records ("given" | "transcribe" | "none").
SOURCES = {
    orchestrator_pb2.LYRICS_SOURCE_GIVEN: "given",
    orchestrator_pb2.LYRICS_SOURCE_TRANSCRIBE: "transcribe",
    orchestrator_pb2.LYRICS_SOURCE_NONE: "none",
}
SOURCE_ENUMS = {name: value for value, name in SOURCES.items()}


@dataclass(frozen=True)
class JobOptions:
    """Validated ``CreateImageOptions`` with the orchestrator's defaults resolved (generation defaults
    stay 0/None: the generator resolves those, and reports what it ran)."""

    lyrics: str
    source: str  # "given" | "transcribe" | "none"
    window: str
    negative_prompt: str
    strength: float  # a float32 value, whoever chose it
    seed: int
    steps: int  # 0 = the generator's default
    guidance: float | None  # None = the generator's default
    width: int  # 0 = the generator's default
    height: int
    scheduler: str  # "" = the generator's default
    projection_seed: int
    keep_bos: bool
    filename: str
    pins: dict[str, common_pb2.Pin] = field(default_factory=dict)  # service kind → the identity it must run
    span: Span | None = None  # [start_s, end_s) of the song this image remembers; None = the whole song
    timed_lyrics: tuple[TimedLine, ...] = ()  # given lyrics with their times (then ``lyrics`` is their text)
    stem_weights: tuple[float, ...] | None = None  # one per stem of STEM_ORDER; None = unweighted (all 1)


@dataclass(frozen=True)
class TimedLine:
    """A line of lyrics with its time (a transcript's segment, or an LRC line), seconds from the song's start."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Words:
    """An image's lyrics window and where it came from (``ImageRecord.section.words`` for a span's image)."""

    window: str
    source: str  # "transcript" | "timed_lyrics" | "salient" (the whole song's window)


def parse_options(msg: orchestrator_pb2.CreateImageOptions, fusion: Fusion, max_lyrics_chars: int,
                  max_seconds: float | None = None) -> JobOptions:
    """Absurd options → INVALID_ARGUMENT naming the field, the limit and what came (a span also against the
    longest song, ``max_seconds``, when given)."""
    timed = _timed_lyrics(msg, max_lyrics_chars)
    if len(msg.lyrics) > max_lyrics_chars:
        raise InvalidInput(f"options.lyrics: at most {max_lyrics_chars} characters (the orchestrator's "
                           f"max_lyrics_chars), got {len(msg.lyrics)}")
    for name, limit in (("negative_prompt", MAX_NEGATIVE_CHARS), ("filename", MAX_FILENAME_CHARS)):
        value = getattr(msg, name)
        if len(value) > limit:
            raise InvalidInput(f"options.{name}: at most {limit} characters, got {len(value)}")
    if msg.lyrics_window not in ("", *WINDOWS):
        raise InvalidInput(f"options.lyrics_window: one of {list(WINDOWS)}, got {msg.lyrics_window!r}")
    source = _source(msg)
    strength = msg.strength if msg.HasField("strength") else fusion.default_strength
    try:
        strength = resolve_strength(strength)
    except InvalidInput:
        raise InvalidInput(f"options.strength: must be in [0, 1], got {msg.strength!r}") from None
    return JobOptions(
        lyrics="\n".join(line.text for line in timed) if timed else msg.lyrics,
        source=source,
        window=msg.lyrics_window or WINDOWS[0],
        negative_prompt=msg.negative_prompt,
        strength=strength,
        seed=int(msg.seed),
        steps=int(msg.steps),
        guidance=float(msg.guidance) if msg.HasField("guidance") else None,
        width=int(msg.width),
        height=int(msg.height),
        scheduler=msg.scheduler,
        projection_seed=int(msg.projection_seed) if msg.HasField("projection_seed")
        else fusion.default_projection_seed,
        keep_bos=bool(msg.keep_bos),
        filename=msg.filename,
        pins=_pins(msg),
        span=_span(msg, max_seconds),
        timed_lyrics=timed,
        stem_weights=parse_stem_weights(msg),
    )


def parse_stem_weights(msg: orchestrator_pb2.CreateImageOptions) -> tuple[float, ...] | None:
    """``stem_weights`` (stem name → factor, each finite in [0, 4], a stem not named = 1) as one weight per stem
    of ``STEM_ORDER``; ``None`` when every weight is 1 (the fusion is then the unweighted one, bit for bit)."""
    for name, value in msg.stem_weights.items():
        if name not in STEM_ORDER:
            raise InvalidInput(f"options.stem_weights: keys are the stems {list(STEM_ORDER)}, got {describe(name)}")
        if not (math.isfinite(value) and 0.0 <= value <= MAX_STEM_WEIGHT):
            raise InvalidInput(f"options.stem_weights[{name}]: must be in [0, {MAX_STEM_WEIGHT:g}], got {value!r}")
    weights = tuple(float(msg.stem_weights.get(name, 1.0)) for name in STEM_ORDER)
    return None if all(w == 1.0 for w in weights) else weights


def _span(msg: orchestrator_pb2.CreateImageOptions, max_seconds: float | None) -> Span | None:
    """The span asked for: its shape now, and the longest song's length; the song's own once decoded."""
    if not msg.HasField("span"):
        return None
    span = (int(msg.span.start_s), int(msg.span.end_s))
    if max_seconds is None:
        check_span(span, max(span[1], 1), "any song")
    else:
        check_span(span, bin_count(max_seconds), "the longest song, max_seconds, rounded up")
    return span


def _timed_lyrics(msg: orchestrator_pb2.CreateImageOptions, max_lyrics_chars: int) -> tuple[TimedLine, ...]:
    """Timed lines: at most ``MAX_TIMED_LINES``, finite non-negative times, in order of their start, their text
    (a line each) within ``max_lyrics_chars``; ``lyrics`` empty beside them."""
    lines = msg.timed_lyrics
    if not lines:
        return ()
    if len(lines) > MAX_TIMED_LINES:
        raise InvalidInput(f"options.timed_lyrics: at most {MAX_TIMED_LINES} lines, got {len(lines)}")
    if msg.lyrics:
        raise InvalidInput(f"options.lyrics: must be empty when timed_lyrics are given (their text is the lyrics), "
                           f"got {len(msg.lyrics)} characters")
    chars = sum(len(line.text) for line in lines) + len(lines) - 1
    if chars > max_lyrics_chars:
        raise InvalidInput(f"options.timed_lyrics: their text, a line each, at most {max_lyrics_chars} characters "
                           f"(the orchestrator's max_lyrics_chars), got {chars}")
    previous = 0.0
    for i, line in enumerate(lines):
        for name in ("start", "end"):
            value = getattr(line, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidInput(f"options.timed_lyrics[{i}].{name}: finite seconds >= 0, got {value!r}")
        if line.start < previous:
            raise InvalidInput(f"options.timed_lyrics[{i}].start: lines in order of their start, got {line.start!r} "
                               f"after {previous!r}")
        previous = line.start
    return tuple(TimedLine(line.start, line.end, line.text) for line in lines)


def _pins(msg: orchestrator_pb2.CreateImageOptions) -> dict[str, common_pb2.Pin]:
    """The pins a request names, by known service kind, each short."""
    pins = {}
    for kind, pin in msg.pins.items():
        if kind not in MODEL_KINDS:
            raise InvalidInput(f"options.pins: keys are service kinds {list(MODEL_KINDS)}, got {describe(kind)}")
        for name in ("identity", "describe"):
            if len(getattr(pin, name)) > MAX_PIN_CHARS:
                raise InvalidInput(f"options.pins[{kind}].{name}: at most {MAX_PIN_CHARS} characters, got "
                                   f"{len(getattr(pin, name))}")
        if pin.identity:
            pins[kind] = pin
    return pins


def _source(msg: orchestrator_pb2.CreateImageOptions) -> str:
    """The lyrics source: unset = given lyrics, or none when there are none (what clients sent before)."""
    if msg.lyrics_source == orchestrator_pb2.LYRICS_SOURCE_UNSPECIFIED:
        return "given" if msg.lyrics or msg.timed_lyrics else "none"
    if msg.lyrics_source not in SOURCES:
        raise InvalidInput(f"options.lyrics_source: one of {sorted(SOURCE_ENUMS)} (or unset), got {msg.lyrics_source}")
    source = SOURCES[msg.lyrics_source]
    if source != "given" and msg.lyrics:
        raise InvalidInput(f"options.lyrics: must be empty when lyrics_source is {source}, got "
                           f"{len(msg.lyrics)} characters")
    if source != "given" and msg.timed_lyrics:
        raise InvalidInput(f"options.timed_lyrics: must be empty when lyrics_source is {source}, got "
                           f"{len(msg.timed_lyrics)} lines")
    return source


def check_with_services(opts: JobOptions, infos: Infos) -> str:
    """The generator's and text encoder's limits (from their ``Describe``); returns the lyrics window."""
    _check_generation(opts, infos.generator)
    if opts.source == "transcribe" and infos.transcriber is None:
        raise FailedPrecondition(
            "options.lyrics_source: TRANSCRIBE asks for the vocal stem to be transcribed, but this orchestrator "
            "has no transcriber configured (its transcriber_target is empty); send the lyrics, or none"
        )
    max_chars = infos.text_encoder.max_chars
    if max_chars and len(opts.negative_prompt) > max_chars:
        raise InvalidInput(
            f"options.negative_prompt: the text encoder takes at most {max_chars} characters, "
            f"got {len(opts.negative_prompt)}"
        )
    return span_words(opts, infos, None).window if opts.source != "transcribe" else ""


def transcript_window(opts: JobOptions, transcript: Transcript, infos: Infos) -> str:
    """The lyrics window of what was heard: one line a segment, then the window as for given lyrics (so the
    hook — repeated lines — is counted after the window's normalisation)."""
    return _window(transcript.lines(), opts, infos)


def span_words(opts: JobOptions, infos: Infos, transcript: Transcript | None) -> Words:
    """The lyrics window of the image of ``opts.span`` (DESIGN.md §11): the transcript's segments (when the lyrics
    were transcribed), else the timed lyric lines, that start inside the span — a line each, then the usual
    window; without any (or without a span, or with untimed lyrics), the whole song's window. A line's start is
    taken to the millisecond, as a record holds it, so that an image's recorded lines select the same again."""
    timed: tuple[TimedLine, ...] = opts.timed_lyrics
    source = "timed_lyrics"
    if transcript is not None:
        timed = tuple(TimedLine(s.start, s.end, s.text) for s in transcript.segments)
        source = "transcript"
    if opts.span is not None and timed:
        start, end = opts.span
        inside = [line.text for line in timed if start <= round(line.start, 3) < end]
        if inside:
            return Words(_window("\n".join(inside), opts, infos), source)
    whole = transcript.lines() if transcript is not None else opts.lyrics
    return Words(_window(whole, opts, infos), "salient")


def _window(lyrics: str, opts: JobOptions, infos: Infos) -> str:
    window = lyrics_window(lyrics, opts.window)
    max_chars = infos.text_encoder.max_chars
    return window[:max_chars] if max_chars else window  # the tokenizer keeps ~77 tokens anyway


def _check_generation(opts: JobOptions, gen: generator_pb2.GeneratorInfo) -> None:
    if opts.steps and not gen.min_steps <= opts.steps <= gen.max_steps:
        raise InvalidInput(
            f"options.steps: {gen.min_steps}..{gen.max_steps} (0 = the generator's default, "
            f"{gen.default_steps}), got {opts.steps}"
        )
    if opts.guidance is not None and not gen.min_guidance <= opts.guidance <= gen.max_guidance:
        raise InvalidInput(
            f"options.guidance: must be in [{gen.min_guidance:g}, {gen.max_guidance:g}], got {opts.guidance!r}"
        )
    for name in ("width", "height"):
        value = getattr(opts, name)
        if value and not (gen.min_size <= value <= gen.max_size and value % max(gen.size_multiple, 1) == 0):
            raise InvalidInput(
                f"options.{name}: a multiple of {gen.size_multiple} in {gen.min_size}..{gen.max_size} "
                f"(0 = the generator's default, {gen.default_size}), got {value}"
            )
    sizes = [(size.width, size.height) for size in gen.sizes]  # a compiled generator's only sizes
    asked = (opts.width or gen.default_size, opts.height or gen.default_size)
    if sizes and asked not in sizes:
        raise InvalidInput(
            f"options.width x options.height: the generator paints only {', '.join(f'{w}x{h}' for w, h in sizes)} "
            f"(0 = the generator's default, {gen.default_size}), got {asked[0]}x{asked[1]}"
        )
    if opts.scheduler and opts.scheduler not in gen.schedulers:
        raise InvalidInput(f"options.scheduler: one of {list(gen.schedulers)}, got {opts.scheduler!r}")


def resolved_request(
    sent: orchestrator_pb2.CreateImageOptions, opts: JobOptions
) -> orchestrator_pb2.CreateImageOptions:
    """The options as sent, with the orchestrator's defaults that applied filled in: what an image's record
    keeps, so that sending it again with the same song reproduces the image."""
    resolved = orchestrator_pb2.CreateImageOptions()
    resolved.CopyFrom(sent)
    resolved.lyrics_window = opts.window
    resolved.strength = opts.strength
    resolved.projection_seed = opts.projection_seed
    resolved.lyrics_source = SOURCE_ENUMS[opts.source]
    if sent.stem_weights:  # the weight of every stem that ran (a stem not named: 1), as the float32 the wire carries
        resolved.stem_weights.clear()
        resolved.stem_weights.update(zip(STEM_ORDER, opts.stem_weights or (1.0,) * len(STEM_ORDER), strict=True))
    resolved.seed = opts.seed  # a reel's section may be painted with a seed of its own
    if opts.span is not None:
        resolved.span.start_s, resolved.span.end_s = opts.span
    else:
        resolved.ClearField("span")
    return resolved
