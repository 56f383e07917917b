"""The ``clip`` backend: a CLIP text model and its BPE tokenizer on ``transformers``.

Default weights: the ``text_encoder``/``tokenizer`` of Stable Diffusion 1.5 (CLIP ViT-L/14, 768-d).
The tiny profile is a small random ``CLIPTextModel`` with the REAL CLIP tokenizer, whose BPE
vocabulary ships inside the ``open-clip-torch`` wheel; both are written with ``save_pretrained``
and loaded by the very code that loads the real model.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from audiomemory.runtime.backend import ModelInfo, resolve_device
from audiomemory.runtime.errors import FailedPrecondition, InvalidInput
from audiomemory.runtime.hub import pull_model, resolve_model_dir, safetensors_only
from audiomemory.text_encoder.backends import Encoded, TextEncoderBackend

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    from audiomemory.text_encoder.config import TextEncoderConfig

# What a hub snapshot needs: the fp32 weights (cast to fp16 on CUDA after loading), configs and
# the tokenizer files. Skips the safety checker, UNet and VAE that share the SD repository.
ALLOW_PATTERNS = ("text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/*")

#: Hidden size of the tiny model; the tiny generator's cross-attention dim must equal it.
TINY_HIDDEN_SIZE = 32
TINY_DIRNAME = "tiny-clip"

# OpenAI CLIP's BPE file: merges after a header line, 49152 - 256 - 2 of them are used.
_BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character map (byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


@lru_cache(maxsize=1)
def clip_bpe() -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary (49 408 tokens) and merges, built as OpenAI's ``SimpleTokenizer`` builds them.

    The file is found with ``find_spec`` so ``open_clip`` itself (which imports torchvision) is never
    imported.
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition(
            "the CLIP BPE vocabulary comes from the open-clip-torch wheel, which is not installed "
            "(pip install --no-deps open-clip-torch)"
        )
    bpe_path = Path(next(iter(spec.submodule_search_locations))) / _BPE_FILE
    with gzip.open(bpe_path) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    merges = [" ".join(line.split()) for line in lines[1 : _N_MERGES + 1]]
    alphabet = list(_bytes_to_unicode().values())
    tokens = alphabet + [t + "</w>" for t in alphabet] + [m.replace(" ", "") for m in merges] + [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_clip_tokenizer(folder: Path) -> None:
    """Write ``vocab.json`` + ``merges.txt`` (as SD 1.5 ships them) and ``save_pretrained`` the tokenizer.

    transformers 5 ignores ``CLIPTokenizer(vocab_file=..., merges_file=...)`` and tokenizes to
    garbage, so the tokenizer is built from a folder holding both files (what the SD repository has).
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    # SD 1.5's tokenizer pads with EOS (id 49407) to 77 tokens.
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), pad_token=EOS, model_max_length=77)
    tokenizer.save_pretrained(str(folder))

def _layout(folder: Path) -> tuple[Path, Path]:
    """``(model_dir, tokenizer_dir)``: SD layout (subfolders) or a flat folder."""
    if (folder / "text_encoder" / "config.json").is_file():
        return folder / "text_encoder", folder / "tokenizer"
    return folder, folder


class ClipBackend(TextEncoderBackend):
    """CLIP text tower: ``[B] texts → [B, 77, D]`` last hidden state, one batched forward."""

    name = "clip"

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__(config)
        self.config: TextEncoderConfig = config
        self._model: CLIPTextModel | None = None
        self._tokenizer: CLIPTokenizer | None = None
        self._revision = ""
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None

    def load(self) -> None:
        import torch
        from transformers import AutoTokenizer, CLIPTextModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a server log is no terminal

        folder, self._revision = resolve_model_dir(
            self.config.model, self.config.revision, ALLOW_PATTERNS, service="text_encoder"
        )
        model_dir, tokenizer_dir = _layout(folder)
        self._device = resolve_device(self.config.device)
        # fp16 halves memory and time on GPUs; CPUs lack fast fp16 kernels, so fp32 there.
        self._dtype = torch.float16 if self._device.type == "cuda" else torch.float32
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        model = safetensors_only(
            "text_encoder", model_dir,
            lambda: CLIPTextModel.from_pretrained(str(model_dir), local_files_only=True, use_safetensors=True,
                                                  dtype=self._dtype),
        )
        # transformers' decorated ``to`` confuses mypy; the call is the ordinary nn.Module.to.
        model.to(self._device)  # type: ignore[arg-type]
        model.eval()
        if tokenizer.model_max_length > model.config.max_position_embeddings:
            # Some tokenizer configs say "very large"; the model's position table is the real limit.
            tokenizer.model_max_length = model.config.max_position_embeddings
        self._tokenizer = cast("CLIPTokenizer", tokenizer)
        self._model = model

    # -- facts -------------------------------------------------------------------------------
    def _loaded(self) -> tuple[CLIPTextModel, CLIPTokenizer]:
        if self._model is None or self._tokenizer is None:
            raise FailedPrecondition("the clip backend was used before load()")
        return self._model, self._tokenizer

    @property
    def hidden_size(self) -> int:
        return int(self._loaded()[0].config.hidden_size)

    @property
    def max_length(self) -> int:
        return int(self._loaded()[1].model_max_length)

    @property
    def vocab_size(self) -> int:
        return len(self._loaded()[1])

    def describe(self) -> ModelInfo:
        model, tokenizer = self._loaded()
        return ModelInfo(
            backend=self.name,
            model_id=self.config.model,
            revision=self._revision,
            device=str(self._device),
            dtype=str(self._dtype).removeprefix("torch."),
            extra={
                "hidden_size": str(self.hidden_size),
                "max_length": str(self.max_length),
                "vocab_size": str(self.vocab_size),
                "num_hidden_layers": str(model.config.num_hidden_layers),
                "output": "last_hidden_state",
                "pad_token_id": str(tokenizer.pad_token_id),
            },
        )

    # -- the verb ----------------------------------------------------------------------------
    def encode(self, texts: list[str]) -> Encoded:
        import torch

        model, tokenizer = self._loaded()
        if not texts:
            raise InvalidInput("texts: at least one text is required, got none")
        length = self.max_length
        # Lone surrogates (possible in a Python str, never in valid UTF-8 off the wire) make the
        # Rust tokenizer raise; they become "?" like any unencodable character.
        texts = [t.encode("utf-8", errors="replace").decode("utf-8") for t in texts]
        # Untruncated lengths tell which texts were cut; ``verbose=False`` silences the
        # "longer than the maximum" warning that this deliberate call would log.
        full = tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        truncated = [len(ids) > length for ids in full]
        batch = tokenizer(
            texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt"
        )
        ids = batch["input_ids"].to(torch.int64)
        with torch.inference_mode():
            # No attention mask, as Stable Diffusion's own encode_prompt does for this model: the
            # generator was trained on embeddings of padded sequences computed this way.
            hidden = model(ids.to(self._device)).last_hidden_state
        return Encoded(
            embeddings=hidden.float().cpu().numpy(),
            token_ids=ids.numpy(),
            truncated=truncated,
        )

    # -- models on disk ----------------------------------------------------------------------
    @classmethod
    def write_tiny(cls, root: Path) -> dict[str, Any]:
        """A 2-layer, 32-wide ``CLIPTextModel`` plus the real CLIP tokenizer, in SD layout."""
        import torch
        from transformers import CLIPTextConfig, CLIPTextModel

        folder = Path(root) / TINY_DIRNAME
        vocab, _ = clip_bpe()
        config = CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=TINY_HIDDEN_SIZE,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=vocab[BOS],
            eos_token_id=vocab[EOS],
            pad_token_id=vocab[EOS],
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same tiny weights every time: stable content hash and images
            model = CLIPTextModel(config)
        model.save_pretrained(str(folder / "text_encoder"))
        write_clip_tokenizer(folder / "tokenizer")
        return {"model": str(folder)}

    @classmethod
    def pull(cls, config: TextEncoderConfig) -> None:  # type: ignore[override]
        pull_model(config.model, config.revision, ALLOW_PATTERNS)

