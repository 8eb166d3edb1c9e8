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


def train_tokenizer(texts: list[str], out: Path, kind: str) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast, DistilBertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=3000, special_tokens=specials, show_progress=False))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    wrapper = BertTokenizerFast if kind == "bert" else DistilBertTokenizerFast
    fast = wrapper(tokenizer_object=tokenizer, model_max_length=128)
    fast.save_pretrained(out)


def make_model(kind: str, vocab_size: int):
    from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

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
    """A copy of the model whose weights int8 cannot represent: one huge value in every row of every
    encoder matrix, so that per-channel int8 rounds the rest of the row to zero while fp32 keeps it."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    shutil.copytree(model_dir, out)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and "classifier" not in name:
                module.weight[:, 0] = module.weight.abs().max() * 400
    model.save_pretrained(out)
    return out
