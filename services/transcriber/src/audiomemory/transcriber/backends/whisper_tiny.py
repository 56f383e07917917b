"""The tiny profile of the ``whisper`` backend: a random-weight Whisper with the REAL tokenizer.

Whisper's byte-level BPE ships as ``whisper/assets/multilingual.tiktoken`` in the ``openai-whisper``
sdist (found with ``find_spec``: the package itself, which imports numba, is never imported). A tiktoken
file is ``base64(token) rank`` per line; transformers' ``TikTokenConverter`` turns the ranks into a
vocabulary and merges, and the special tokens follow in openai-whisper's order (end of text, start of
transcript, the 100 languages of large-v3, tasks, ``<|nospeech|>``, ``<|notimestamps|>``, then the 1501
timestamps), so every id equals large-v3's. The model is large-v3-turbo's shape scaled down (128 mel
bins, 1500 encoder positions: the same 30 s windows) and ``generation_config.json`` carries what
``generate`` needs (languages, tasks, timestamp tokens, the non-speech tokens openai-whisper suppresses).
Everything is written with ``save_pretrained`` and loaded by the code that loads the real model.
"""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from typing import Any

from audiomemory.runtime.errors import FailedPrecondition

TINY_DIRNAME = "tiny-whisper"
_TIKTOKEN = "multilingual.tiktoken"
_N_LANGUAGES = 100  # large-v3's (Cantonese added)
_N_TIMESTAMPS = 1501  # 0.00 .. 30.00 s every 0.02 s


def _tiktoken_path() -> Path:
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition(
            "the Whisper tokenizer file comes from the openai-whisper sdist, which is not installed "
            "(pip install --no-deps openai-whisper==20250625)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / _TIKTOKEN


def _ranks(path: Path) -> dict[bytes, int]:
    lines = path.read_text(encoding="ascii").splitlines()
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines if line)}


def special_tokens() -> list[str]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    languages = [f"<|{code}|>" for code in list(LANGUAGES)[:_N_LANGUAGES]]
    return ["<|endoftext|>", "<|startoftranscript|>", *languages, "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]


def build_tokenizer() -> Any:
    """Whisper's multilingual tokenizer (large-v3 ids) from the tiktoken file."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return _ranks(Path(tiktoken_url))  # a local file: no tiktoken package, no download

    vocab, merges = _Converter().extract_vocab_merges_from_model(str(_tiktoken_path()))
    specials = special_tokens()
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(_N_TIMESTAMPS)]
    first = len(vocab)
    for i, token in enumerate(specials + timestamps):
        vocab[token] = first + i
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, add_prefix_space=False)
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in timestamps])
    return tokenizer


def non_speech_tokens(tokenizer: Any) -> list[int]:
    """The symbols openai-whisper suppresses (``Tokenizer.non_speech_tokens``), as this tokenizer spells them."""
    symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
    symbols += ["<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("', "((", "))", "(((", ")))",
                "[[", "]]", "{{", "}}", "♪♪", "♪♪♪"]
    miscellaneous = set("♩♪♫♬♭♮♯")

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False))

    result = {encode(" -")[0], encode(" '")[0]}
    for symbol in symbols + sorted(miscellaneous):
        for tokens in (encode(symbol), encode(" " + symbol)):
            if len(tokens) == 1 or symbol in miscellaneous:
                result.add(tokens[0])
    return sorted(result)


def write_tiny_whisper(root: Path) -> Path:
    """Write the tiny model, its feature extractor and the real tokenizer under ``root``; return the folder."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder = root / TINY_DIRNAME
    tokenizer = build_tokenizer()
    ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in special_tokens()}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=128, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=448, decoder_start_token_id=sot,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, begin_suppress_tokens=None, suppress_tokens=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same tiny weights every time: a stable content hash
        model = WhisperForConditionalGeneration(config)
    languages = [t for t in special_tokens()[2 : 2 + _N_LANGUAGES]]
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot, max_length=448,
        is_multilingual=True, lang_to_id={t: ids[t] for t in languages},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50, begin_suppress_tokens=[tokenizer.encode(" ", add_special_tokens=False)[0], eot],
        suppress_tokens=non_speech_tokens(tokenizer),
    )
    model.save_pretrained(str(folder))
    WhisperFeatureExtractor(feature_size=128).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
