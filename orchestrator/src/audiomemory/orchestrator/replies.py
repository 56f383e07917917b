"""Checks of the model services' streamed replies, for the gRPC adapter (``downstream.Downstream``).

- ``FrameCheck`` — the audio encoder's frames: in order, signal by signal, ``[n, dim]`` float32 and finite.
- ``ImageCheck`` — the generator's images: a batch's PNGs in order, each in pieces, each bounded.
"""

from __future__ import annotations

from audiomemory.orchestrator.stages import Frames, Painted
from audiomemory.runtime import codec
from audiomemory.runtime.errors import AudioMemoryError
from audiomemory.v1 import audio_encoder_pb2, generator_pb2

MAX_PNG_BYTES = 64 * 1024 * 1024


class ImageCheck:
    """The generator's images: ``count`` PNGs in order (``ImageChunk.index`` 0, 1, …), each in pieces, each at most
    ``MAX_PNG_BYTES``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.done = 0
        self.png = bytearray()

    def add(self, chunk: generator_pb2.ImageChunk) -> Painted | None:
        """The image this piece completes, else None."""
        if self.done >= self.count or chunk.index != self.done:
            expected = f"image {self.done} of {self.count}" if self.done < self.count else "no more"
            raise AudioMemoryError(f"the generator sent a piece of image {chunk.index}, expected {expected}")
        self.png += chunk.png
        if len(self.png) > MAX_PNG_BYTES:
            raise AudioMemoryError(f"the generator's PNG passed {MAX_PNG_BYTES} bytes")
        if not chunk.last:
            return None
        painted = Painted(bytes(self.png), chunk.width, chunk.height, chunk.scheduler, chunk.index)
        self.png, self.done = bytearray(), self.done + 1
        return painted

    def end(self) -> None:
        if self.done < self.count:
            raise AudioMemoryError(f"the generator's stream ended without the last image piece ({self.done} of "
                                   f"{self.count} image(s) came)")


class FrameCheck:
    """The audio encoder's frames in order, signal by signal, ``[n, dim]`` float32 and finite."""

    def __init__(self, signals: int, dim: int) -> None:
        self.signals = signals
        self.dim = dim
        self.next_frame = [0] * signals
        self.ended = False

    def add(self, msg: audio_encoder_pb2.EmbedFrames) -> Frames:
        signals, next_frame = self.signals, self.next_frame
        if not 0 <= msg.signal < signals or msg.first != next_frame[msg.signal]:
            raise AudioMemoryError(
                f"the audio encoder sent frames {msg.first}.. of signal {msg.signal}, expected "
                f"signal 0..{signals - 1} from frame {next_frame[min(max(msg.signal, 0), signals - 1)]}"
            )
        frames = codec.from_tensor(msg.embeddings, field=f"audio_encoder.frames[{msg.signal}]",
                                   shape=(None, self.dim), dtypes=("float32",), finite=True)
        next_frame[msg.signal] += frames.shape[0]
        return Frames(msg.signal, frames, int(msg.done), int(msg.total))

    def end(self, frames: list[int]) -> None:
        if frames != self.next_frame:
            raise AudioMemoryError(f"the audio encoder ended with {frames} frames, sent {self.next_frame}")
        self.ended = True
