"""The facts of Qwen2 that the rest of the lab relies on, written once.

Every other module imports these names instead of repeating them: the tokenizer built offline, the bundled models'
recipe, the lab's input handling, the loader's checks and the web demo all read them from here. Sources: the
`tokenizer.json`, `tokenizer_config.json` and `config.json` files of the Qwen2 releases on the Hugging Face hub, and
the Qwen2 technical report (arXiv 2407.10671).
"""

# The checkpoints the lab opens (config.json "model_type"): dense Qwen2 and Qwen2.5, and Qwen2-MoE (57B-A14B).
MODEL_TYPES = ("qwen2", "qwen2_moe")

# Byte-level BPE: ids 0..151642 are regular tokens, then three special tokens.
N_BPE_TOKENS = 151_643
SPECIAL_TOKENS = {"<|endoftext|>": 151_643, "<|im_start|>": 151_644, "<|im_end|>": 151_645}
EOS_TOKEN = "<|im_end|>"  # Qwen2-*-Instruct: the end of the assistant's turn
PAD_TOKEN = "<|endoftext|>"  # the end of a document; also the padding token
MODEL_MAX_LENGTH = 32_768  # Qwen2-Instruct's tokenizer_config.json

# The pre-tokenization split of Qwen2's tokenizer.json (the same as tiktoken's `qwen.tiktoken` encoding): words with
# their leading space, runs of punctuation, runs of whitespace, and every digit on its own (\p{N}, not \p{N}{1,3}).
PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# The system prompt the chat template adds when a conversation brings none.
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2-*-Instruct's tokenizer_config.json "chat_template" (ChatML), verbatim.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chatml(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """CHAT_TEMPLATE rendered for `messages` ({"role", "content"} dicts), as a tokenizer's apply_chat_template does."""
    import jinja2

    template = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(CHAT_TEMPLATE)
    return template.render(messages=messages, add_generation_prompt=add_generation_prompt)
