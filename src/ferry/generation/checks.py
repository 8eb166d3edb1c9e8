"""What a text-generation artifact must pass before it is accepted: a smoke generation through the endpoint's
own engine, and a parity check of its weights against the fp32 source.

- The smoke loads ``model/`` exactly as the endpoint does (:meth:`ferry.endpoint.engine.Engine.load`) and answers
  one greedy chat turn (a plain prompt when the tokenizer has no chat template): the files load together and
  generate text, which hashes alone cannot show.
- The parity check runs both models teacher-forced on the same token ids of a few fixed sentences and counts the
  positions where their next-token argmax agrees. A dtype conversion that damages weights (an overflow, a
  mangled tensor) shows there long before it shows in a short greedy answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SMOKE_QUESTION = "What is the capital of France? Answer in one sentence."
SMOKE_PROMPT = "The capital of France is"


@dataclass(frozen=True)
class SmokeResult:
    """One greedy generation by the packaged model, as the endpoint's engine ran it."""

    mode: str  # "chat" (through the chat template) or "generate" (a plain prompt)
    prompt: str
    text: str
    prompt_tokens: int
    generated_tokens: int
    finish_reason: str
    seconds: float
    first_token_seconds: float
    load_seconds: float

    @property
    def passed(self) -> bool:
        return self.generated_tokens >= 1 and bool(self.text.strip())

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "prompt": self.prompt,
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "finish_reason": self.finish_reason,
            "seconds": round(self.seconds, 4),
            "first_token_seconds": round(self.first_token_seconds, 4),
            "load_seconds": round(self.load_seconds, 4),
            "passed": self.passed,
        }


def load_endpoint_engine(model_dir: Path) -> Any:
    """The endpoint's engine on `model_dir` (the default loader of :func:`smoke_test`)."""
    from ferry.endpoint.engine import Engine

    return Engine.load(model_dir)


def smoke_test(model_dir: Path, chat: bool, max_new_tokens: int,
               load: Callable[[Path], Any] = load_endpoint_engine) -> SmokeResult:
    """Load `model_dir` with `load` and generate greedily: a chat answer to :data:`SMOKE_QUESTION`, or a
    continuation of :data:`SMOKE_PROMPT` when the model has no chat template."""
    from ferry.endpoint.engine import Sampling

    engine = load(model_dir)
    sampling = Sampling(max_new_tokens=max_new_tokens, do_sample=False)
    if chat:
        generation = engine.chat([{"role": "user", "content": SMOKE_QUESTION}], sampling)
        prompt = SMOKE_QUESTION
    else:
        generation = engine.generate(SMOKE_PROMPT, sampling)
        prompt = SMOKE_PROMPT
    return SmokeResult(
        mode="chat" if chat else "generate",
        prompt=prompt,
        text=generation.text,
        prompt_tokens=generation.prompt_tokens,
        generated_tokens=generation.generated_tokens,
        finish_reason=generation.finish_reason,
        seconds=generation.seconds,
        first_token_seconds=generation.first_token_seconds,
        load_seconds=float(engine.load_seconds),
    )


@dataclass(frozen=True)
class ParityResult:
    """Teacher-forced next-token agreement, packaged weights (as loaded for serving) against the fp32 source."""

    texts: int
    tokens: int  # positions compared: every token of every text
    agreement: float  # share of positions with the same argmax
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    min_agreement: float
    candidate: str  # what was compared with the fp32 source, in words
    failures: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "texts": self.texts,
            "tokens": self.tokens,
            "agreement": round(self.agreement, 6),
            "max_abs_logit_diff": round(self.max_abs_logit_diff, 6),
            "mean_abs_logit_diff": round(self.mean_abs_logit_diff, 6),
            "min_agreement": self.min_agreement,
            "reference": "the source model in float32",
            "candidate": self.candidate,
            "passed": self.passed,
            "failures": list(self.failures),
        }


def token_ids(tokenizer: Any, texts: Sequence[str]) -> list[Any]:
    """Each text's ids as a (1, n) tensor, as the tokenizer makes them for a prompt."""
    return [tokenizer(text, return_tensors="pt")["input_ids"] for text in texts if text.strip()]


def teacher_forced_logits(model: Any, ids: Sequence[Any]) -> list[Any]:
    """The model's logits at every position of each sequence (float32, on the CPU), one sequence at a time (no
    padding, so no attention mask can differ between the two models)."""
    import torch

    model.eval()
    with torch.inference_mode():
        return [model(input_ids=one).logits[0].float().cpu() for one in ids]


def compare_next_tokens(reference: Sequence[Any], candidate: Sequence[Any], min_agreement: float,
                        candidate_name: str) -> ParityResult:
    """The agreement of the two models' next-token argmax over every position; failing under `min_agreement`."""
    import torch

    same = positions = 0
    worst = total = 0.0
    for expected, actual in zip(reference, candidate, strict=True):
        same += int((expected.argmax(-1) == actual.argmax(-1)).sum())
        positions += int(expected.shape[0])
        difference = (expected - actual).abs()
        worst = max(worst, float(difference.max()))
        total += float(difference.mean()) * int(expected.shape[0])
    agreement = same / positions if positions else 0.0
    finite = all(bool(torch.isfinite(actual).all()) for actual in candidate)
    failures = []
    if not finite:
        failures.append("the packaged model's logits hold inf or NaN (an overflow in the dtype conversion?)")
    if agreement < min_agreement:
        failures.append(f"next-token agreement {agreement:.4f} is under min_agreement {min_agreement} "
                        f"({same} of {positions} tokens; max |logit diff| {worst:.4f})")
    return ParityResult(texts=len(reference), tokens=positions, agreement=agreement, max_abs_logit_diff=worst,
                        mean_abs_logit_diff=total / positions if positions else 0.0, min_agreement=min_agreement,
                        candidate=candidate_name, failures=tuple(failures))
