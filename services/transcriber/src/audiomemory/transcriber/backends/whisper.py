"""The ``whisper`` backend: OpenAI's Whisper on ``transformers`` (``WhisperForConditionalGeneration``).

Why transformers' Whisper and not the ``openai-whisper`` package: the weights then live where the text
encoder's and the generator's do — the Hugging Face cache (``HF_HOME``), resolved to a snapshot whose
commit is the revision ``Describe`` reports, fetched by ``models pull`` through the same
``runtime.hub`` code — and the tiny profile is a ``save_pretrained`` folder loaded by the very
``from_pretrained`` call that loads the real model. ``openai-whisper`` would add a second cache
(``~/.cache/whisper``, checkpoints by URL and SHA-256) and ``whisper.load_model``'s own pickled checkpoint
format, and its long-form loop decodes the whole signal at once, where the service reads windows as the
stem streams in. Only ``openai-whisper``'s tokenizer file is used, by ``models make-tiny``
(``whisper_tiny``).

One window (30 s at 16 kHz) is read as openai-whisper reads it, greedily: one decoder step after
``<|startoftranscript|>`` gives the language (unless one is configured) and the no-speech probability;
``generate`` with timestamps gives the tokens; a teacher-forced pass gives their average log-probability.
The guards then apply (``TranscriberConfig``): no-speech probability above ``no_speech_threshold`` with an
average log-probability below ``logprob_threshold`` → nothing; compression ratio above
``compression_ratio_threshold`` → nothing (no temperature fallback: decoding stays deterministic). The
silence gate before any of this is ``stream``'s.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audiomemory.runtime.backend import ModelInfo, resolve_device
from audiomemory.runtime.errors import FailedPrecondition, InvalidInput
from audiomemory.runtime.hub import pull_model, resolve_model_dir, safetensors_only
from audiomemory.runtime.transcript import Segment
from audiomemory.transcriber.backends import Heard, TranscriberBackend

if TYPE_CHECKING:
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from audiomemory.transcriber.config import TranscriberConfig

#: What a hub snapshot needs: weights, configs, the feature extractor's and the tokenizer's files.
ALLOW_PATTERNS = (
    "config.json", "generation_config.json", "model.safetensors", "preprocessor_config.json",
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "normalizer.json",
    "added_tokens.json", "special_tokens_map.json",
)
TIME_PRECISION = 0.02  # seconds per timestamp token


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` over bytes of its zlib compression (openai-whisper's repetition measure)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


#: The tiny profile's cap on the tokens decoded a window (``write_tiny``).
TINY_MAX_NEW_TOKENS = 32


class WhisperBackend(TranscriberBackend):
    """Whisper: one 30 s window of 16 kHz mono → timed segments, language, guards applied."""

    name = "whisper"

    def __init__(self, config: TranscriberConfig) -> None:
        super().__init__(config)
        self._model: WhisperForConditionalGeneration | None = None
        self._features: WhisperFeatureExtractor | None = None
        self._tokenizer: Any = None
        self._revision = ""
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None
        self._ids: dict[str, int] = {}
        self._languages: dict[int, str] = {}  # language token id → code

    def load(self) -> None:
        import torch
        from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder, self._revision = resolve_model_dir(
            self.config.model, self.config.revision, ALLOW_PATTERNS, service="transcriber"
        )
        self._device = resolve_device(self.config.device)
        # fp16 halves memory and time on GPUs; CPUs lack fast fp16 kernels, so fp32 there.
        self._dtype = torch.float16 if self._device.type == "cuda" else torch.float32
        self._features = WhisperFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
        self._tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = safetensors_only(
            "transcriber", folder,
            lambda: WhisperForConditionalGeneration.from_pretrained(str(folder), local_files_only=True,
                                                                    use_safetensors=True, dtype=self._dtype),
        )
        model.to(self._device)  # type: ignore[arg-type]
        model.eval()
        gen = model.generation_config
        lang_to_id = dict(getattr(gen, "lang_to_id", None) or {})
        if not lang_to_id:
            raise FailedPrecondition(f"transcriber model {self.config.model!r} has no lang_to_id in its "
                                     "generation_config.json; a multilingual Whisper checkpoint is expected")
        self._languages = {i: token.strip("<|>") for token, i in lang_to_id.items()}
        if self.config.language is not None and self.config.language not in self._languages.values():
            raise FailedPrecondition(f"transcriber language {self.config.language!r} is not one of the model's "
                                     f"{len(lang_to_id)} languages")
        self._ids = {
            "sot": int(model.config.decoder_start_token_id), "eot": int(gen.eos_token_id),
            "transcribe": int(gen.task_to_id["transcribe"]),  # type: ignore[attr-defined]
            "no_timestamps": int(gen.no_timestamps_token_id),  # type: ignore[attr-defined]
            "no_speech": int(self._tokenizer.convert_tokens_to_ids("<|nospeech|>")),
        }
        self._model = model

    # -- facts ------------------------------------------------------------------------------------
    def _loaded(self) -> tuple[WhisperForConditionalGeneration, WhisperFeatureExtractor]:
        if self._model is None or self._features is None:
            raise FailedPrecondition("the whisper backend was used before load()")
        return self._model, self._features

    @property
    def sample_rate(self) -> int:
        return int(self._loaded()[1].sampling_rate)

    @property
    def window(self) -> int:
        return int(self._loaded()[1].n_samples)

    def describe(self) -> ModelInfo:
        model, features = self._loaded()
        cfg = self.config
        guards = [
            f"silence_dbfs={cfg.silence_dbfs:g}" if cfg.silence_dbfs is not None else "",
            f"no_speech>{cfg.no_speech_threshold:g}&logprob<{cfg.logprob_threshold:g}"
            if cfg.no_speech_threshold is not None else "",
            f"compression_ratio>{cfg.compression_ratio_threshold:g}" if cfg.compression_ratio_threshold else "",
        ]
        return ModelInfo(
            backend=self.name, model_id=cfg.model, revision=self._revision, device=str(self._device),
            dtype=str(self._dtype).removeprefix("torch."),
            extra={
                "language": cfg.language or "detect", "decoding": "greedy", "timestamps": "segment",
                "window_seconds": f"{features.n_samples / features.sampling_rate:g}",
                "num_mel_bins": str(model.config.num_mel_bins), "languages": str(len(self._languages)),
                "max_new_tokens": str(cfg.max_new_tokens or "model"), "guards": ",".join(g for g in guards if g),
                "resampler": "soxr HQ",
            },
        )

    # -- the verb ---------------------------------------------------------------------------------
    def decode_window(self, audio: np.ndarray, language: str | None) -> Heard:
        import torch

        model, features = self._loaded()
        if audio.ndim != 1 or audio.shape[0] > self.window:
            raise InvalidInput(f"audio: expected mono [n ≤ {self.window}] samples, got shape {audio.shape}")
        inputs = features(audio, sampling_rate=features.sampling_rate, return_tensors="pt").input_features
        with torch.inference_mode():
            encoded = model.model.encoder(inputs.to(self._device, self._dtype))
            first = model(encoder_outputs=encoded, decoder_input_ids=self._prompt([])).logits[0, -1].float()
            lang_id = self._language_id(first, language)
            no_speech = float(first.softmax(-1)[self._ids["no_speech"]])
            tokens = model.generate(
                encoder_outputs=encoded, return_timestamps=True, task="transcribe",
                language=self._languages[lang_id], max_new_tokens=self.config.max_new_tokens,
            )[0].tolist()
            logprob = self._avg_logprob(model, encoded, [self._ids["sot"], lang_id, self._ids["transcribe"]], tokens)
        return self._heard(tokens, self._languages[lang_id], no_speech, logprob)

    def _prompt(self, tokens: list[int]) -> torch.Tensor:
        import torch

        return torch.tensor([[self._ids["sot"], *tokens]], device=self._device)

    def _language_id(self, logits: torch.Tensor, language: str | None) -> int:
        if language:
            for token_id, code in self._languages.items():
                if code == language:
                    return token_id
            raise InvalidInput(f"options.language: {language!r} is not one of the model's languages")
        ids = list(self._languages)
        return ids[int(logits[ids].argmax())]

    def _avg_logprob(self, model: WhisperForConditionalGeneration, encoded: Any, prompt: list[int],
                     tokens: list[int]) -> float:
        """Mean log-probability of the decoded tokens (the end-of-text one included), teacher-forced."""
        import torch

        eot = self._ids["eot"]
        target = [t for t in tokens if t != eot] + [eot]
        ids = torch.tensor([prompt + target[:-1]], device=self._device)
        logits = model(encoder_outputs=encoded, decoder_input_ids=ids).logits[0, len(prompt) - 1 :].float()
        picked = logits.log_softmax(-1).gather(1, torch.tensor(target, device=self._device)[:, None])
        return float(picked.mean())

    def _heard(self, tokens: list[int], language: str, no_speech: float, logprob: float) -> Heard:
        """Tokens → segments (a pair of timestamps around text each); then the guards."""
        cfg = self.config
        if cfg.no_speech_threshold is not None and no_speech > cfg.no_speech_threshold \
                and logprob < cfg.logprob_threshold:
            return Heard((), language, dropped="no_speech")
        segments, unfinished = self._segments(tokens)
        text = " ".join(s.text for s in (*segments, *([unfinished] if unfinished else [])))
        if cfg.compression_ratio_threshold is not None and compression_ratio(text) > cfg.compression_ratio_threshold:
            return Heard((), language, dropped="compression_ratio")
        return Heard(tuple(segments), language, unfinished)

    def _segments(self, tokens: list[int]) -> tuple[list[Segment], Segment | None]:
        begin = self._ids["no_timestamps"] + 1  # <|0.00|>
        segments: list[Segment] = []
        start: float | None = None
        text: list[int] = []
        for token in tokens:
            if token >= begin:
                time = (token - begin) * TIME_PRECISION
                if start is not None and text:
                    segments.append(Segment(start, time, self._decode(text)))
                    start, text = None, []
                else:
                    start = time  # an opening timestamp (a repeated one re-opens at the same time)
            elif token < self._ids["eot"]:  # text; the special tokens carry none
                if start is None:
                    start = segments[-1].end if segments else 0.0
                text.append(token)
        segments = [s for s in segments if s.text]
        window_end = self.window / self.sample_rate  # the stream clips it to the signal's end
        cut = Segment(start or 0.0, window_end, self._decode(text)) if text else None
        return segments, cut if cut is not None and cut.text else None

    def _decode(self, tokens: list[int]) -> str:
        return str(self._tokenizer.decode(tokens, skip_special_tokens=True)).strip()

    # -- models on disk ---------------------------------------------------------------------------
    @classmethod
    def write_tiny(cls, root: Path) -> dict[str, Any]:
        """A 2-layer, 32-wide random Whisper (large-v3's vocabulary, 128 mel bins) with the real tokenizer, decoding
        at most ``TINY_MAX_NEW_TOKENS`` a window: random weights never say end-of-text, so uncapped it decodes
        the model's 444 tokens every 30 s (7-16 s a window on one core) into text that means nothing anyway."""
        from audiomemory.transcriber.backends.whisper_tiny import write_tiny_whisper

        return {"model": str(write_tiny_whisper(Path(root))), "max_new_tokens": TINY_MAX_NEW_TOKENS}

    @classmethod
    def pull(cls, config: TranscriberConfig) -> None:  # type: ignore[override]
        pull_model(config.model, config.revision, ALLOW_PATTERNS)
