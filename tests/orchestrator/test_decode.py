"""Decoding uploads with PyAV: every common format, the file's own rate and channels, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from audiomemory.orchestrator.decode import decode_audio
from audiomemory.runtime.errors import InvalidInput, ResourceExhausted

from .songs import encode_song, tone

CASES = [
    ("wav", 22050, 1),
    ("wav", 48000, 2),
    ("flac", 44100, 2),
    ("flac", 32000, 1),
    ("mp3", 44100, 2),
    ("mp3", 22050, 1),
    ("ogg", 44100, 2),
    ("ogg", 22050, 2),  # FFmpeg's native Vorbis encoder is stereo-only; mono ogg is covered by opus
    ("opus", 48000, 2),
    ("opus", 48000, 1),
    ("m4a", 48000, 2),
    ("m4a", 22050, 1),
]


@pytest.mark.parametrize(("ext", "rate", "channels"), CASES)
def test_common_formats_decode_at_their_own_rate_and_channels(ext: str, rate: int, channels: int) -> None:
    decoded = decode_audio(encode_song(ext, rate, channels, seconds=1.0), filename=f"song.{ext}")
    assert decoded.sample_rate == rate
    assert decoded.channels == channels
    assert decoded.samples.dtype == np.float32 and decoded.samples.flags.c_contiguous
    # codecs pad by a frame or two; the length stays about a second
    assert 0.95 <= decoded.seconds <= 1.1
    assert 0.05 < float(np.abs(decoded.samples).max()) <= 1.0


def test_lossless_decoding_reproduces_the_samples() -> None:
    source = tone(44100, 2, 0.5)
    decoded = decode_audio(encode_song("flac", 44100, 2, seconds=0.5))
    np.testing.assert_allclose(decoded.samples, source, atol=1.0 / 32768 + 1e-6)


def test_empty_upload_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        decode_audio(b"")


def test_text_is_not_audio() -> None:
    with pytest.raises(InvalidInput, match=r"'lyrics.txt' \(\d+ bytes\) is not an audio file"):
        decode_audio(b"Hold me now, under the lights\n" * 20, filename="lyrics.txt")


def test_an_image_file_has_no_audio_stream() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(buf, "PNG")
    with pytest.raises(InvalidInput, match=r"no audio stream.*video"):
        decode_audio(buf.getvalue(), filename="cover.png")


# Not ogg/opus nor wav: their headers carry no total length independent of the bytes present
# (FFmpeg reads the last Ogg page's granule / the file size), so a cut at a page or sample boundary
# is a shorter valid file; it decodes to what is there.
@pytest.mark.parametrize("ext", ["flac", "mp3", "m4a"])
def test_truncated_files_are_invalid(ext: str) -> None:
    data = encode_song(ext, 44100, 2, seconds=2.0)
    with pytest.raises(InvalidInput, match="truncated"):
        decode_audio(data[: len(data) // 2], filename=f"song.{ext}")


def test_corrupt_middle_is_invalid_or_decodes_without_garbage_values() -> None:
    data = bytearray(encode_song("flac", 44100, 2, seconds=2.0))
    data[len(data) // 3 : len(data) // 3 + 2000] = bytes(2000)
    try:
        decoded = decode_audio(bytes(data))
    except InvalidInput as exc:
        assert "corrupt" in str(exc) or "truncated" in str(exc)
    else:  # FFmpeg may conceal the damage; then the samples must still be finite and in range
        assert np.isfinite(decoded.samples).all()


def test_over_size_upload_is_resource_exhausted() -> None:
    data = encode_song("wav", 22050, 1, seconds=1.0)
    with pytest.raises(ResourceExhausted, match=f"{len(data)} bytes is over the upload limit of 1000 bytes"):
        decode_audio(data, max_bytes=1000)


def test_over_length_song_is_resource_exhausted() -> None:
    data = encode_song("mp3", 22050, 1, seconds=2.0)
    with pytest.raises(ResourceExhausted, match="over the limit of 1 s"):
        decode_audio(data, max_seconds=1.0)


@pytest.mark.parametrize(("channels", "reserved"), [(2, 1000), (2, 640), (1, 1000), (2, 300), (2, 0)])
def test_decoded_pieces_gather_into_one_contiguous_array_whatever_the_reserved_length(
    channels: int, reserved: int
) -> None:
    # The reservation comes from the header: longer (rows moved together after), exact, or too short (more
    # is asked for, and granted here).
    from audiomemory.orchestrator.decode import _Limit, _Samples

    rng = np.random.default_rng(channels + reserved)
    pieces = [rng.standard_normal((channels, int(n))).astype(np.float32) for n in rng.integers(1, 90, 10)]
    asked: list[int] = []
    samples = _Samples(channels, _Limit(reserved, 1000, None, lambda frames: asked.append(frames) or True), "x", 1)
    for piece in pieces:
        samples.add(piece)
    out = samples.result()
    assert out.flags.c_contiguous and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.concatenate(pieces, axis=1))
    assert bool(asked) == (sum(p.shape[1] for p in pieces) > reserved)


def test_decoding_stops_where_the_reservation_ends_when_no_more_room_is_granted() -> None:
    from audiomemory.orchestrator.decode import _Limit, _Samples

    samples = _Samples(2, _Limit(100, 1000, 0.5, lambda frames: False), "'song.flac'", 200)
    samples.add(np.zeros((2, 100), np.float32))
    with pytest.raises(ResourceExhausted, match=r"more than the 0.5 s reserved for it \(its header declares 0.5 s"):
        samples.add(np.zeros((2, 1), np.float32))
    assert samples.frames == 100


@pytest.mark.parametrize(("held", "in_place"), [(950, True), (300, False)])
def test_a_song_much_shorter_than_its_room_keeps_no_pages_of_the_room(held: int, in_place: bool) -> None:
    # Rows moved together in place would commit the pages between them: a much shorter song is copied out.
    from audiomemory.orchestrator.decode import _Limit, _Samples

    samples = _Samples(2, _Limit(1000, 1000, None), "x", 1)
    samples.add(np.ones((2, held), np.float32))
    out = samples.result()
    assert out.shape == (2, held) and np.shares_memory(out, samples.buf) is in_place
    np.testing.assert_array_equal(out, 1.0)
