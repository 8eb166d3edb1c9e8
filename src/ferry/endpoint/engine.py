"""One causal language model behind a lock: what the endpoint server runs, and what Ferry's local twin of the
SageMaker endpoint answers with.

The engine loads a Hugging Face folder (config, safetensors, a tokenizer with a chat template) with transformers.
On a CPU it computes in float32 whatever the files hold (a bf16 artifact is for GPUs: bf16 matmuls on most CPUs
are emulated and slow); on CUDA it keeps the files' dtype, as LMI does. One generation runs at a time: on a CPU a
second one in parallel would only halve the speed of both, and the seeded runs need the random generator to
themselves.

torch and transformers are imported inside :meth:`Engine.load`: this module imports without them, so that the
server, the dialect and their tests can name its types on a machine without the build stack.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.endpoint.exceptions import ModelLoadError, ModelNotFoundError, NoChatTemplateError, PromptTooLongError

FINISH_LENGTH = "length"
FINISH_EOS = "eos_token"
FINISH_STOP = "stop_sequence"
FINISH_REASONS = (FINISH_LENGTH, FINISH_EOS, FINISH_STOP)


@dataclass(frozen=True)
class Sampling:
    """Validated generation parameters, under LMI's names (the dialect module checks what clients send; this
    class only refuses what no caller should build). Greedy unless ``do_sample``: the sampling knobs apply only
    then, as in transformers and in LMI before vLLM."""

    max_new_tokens: int = 64
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    stop_sequences: tuple[str, ...] = ()
    seed: int | None = None
    do_sample: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be over 0, not {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {self.top_k}")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be over 0, not {self.repetition_penalty}")
        if any(not stop for stop in self.stop_sequences):
            raise ValueError("stop_sequences must not hold an empty string")


@dataclass(frozen=True)
class Generation:
    """What one generation produced, and how long it took."""

    text: str  # the new text only (a stop sequence excluded)
    prompt_tokens: int
    generated_tokens: int
    finish_reason: str  # "length" | "eos_token" | "stop_sequence"
    seconds: float  # the whole generation
    first_token_seconds: float  # time to the first new token

    @property
    def tokens_per_second(self) -> float:
        """New tokens a second after the first one: the decode speed, apart from the prompt's prefill."""
        decoding = self.seconds - self.first_token_seconds
        return (self.generated_tokens - 1) / decoding if self.generated_tokens > 1 and decoding > 0 else 0.0


@dataclass
class Engine:
    """A loaded model and its tokenizer. Build it with :meth:`load`."""

    model_dir: Path
    load_seconds: float  # reading the files into the model and tokenizer (torch's own import not counted)
    context_length: int
    dtype: str
    device: str
    _model: Any = field(repr=False)
    _tokenizer: Any = field(repr=False)
    _eos_ids: frozenset[int] = field(repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, model_dir: Path, device: str | None = None, threads: int | None = None) -> Engine:
        """Load the Hugging Face folder `model_dir` on `device` (default: CUDA when there is one, else the CPU).

        `threads` sets torch's intra-op threads for the whole process (default: torch's own, one a core). On a
        machine whose cores are busy with other work, fewer threads can be many times faster: torch's threads
        spin waiting for each other, and one that is descheduled stalls every step."""
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ModelNotFoundError(f"{model_dir} is not a Hugging Face model folder (no config.json)")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()  # the files, not the imports: those are the process's, paid once
        if threads is not None:
            torch.set_num_threads(threads)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float32 if device == "cpu" else "auto"
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load the model in {model_dir}: {exc}") from exc
        model.eval()
        eos = model.generation_config.eos_token_id
        eos_ids = {eos} if isinstance(eos, int) else set(eos or ())
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        context = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
        return cls(model_dir=model_dir, load_seconds=time.perf_counter() - started, context_length=int(context),
                   dtype=str(model.dtype).removeprefix("torch."), device=device, _model=model,
                   _tokenizer=tokenizer, _eos_ids=frozenset(eos_ids))

    @property
    def has_chat_template(self) -> bool:
        return bool(self._tokenizer.chat_template)

    def generate(self, prompt: str, sampling: Sampling) -> Generation:
        """Continue `prompt` as it is (no template, no special tokens added beyond what the tokenizer always adds)."""
        return self._run(lambda: self._tokenizer(prompt, return_tensors="pt")["input_ids"], sampling)

    def chat(self, messages: list[dict[str, str]], sampling: Sampling) -> Generation:
        """Answer the conversation `messages` (``role``, ``content``) as the assistant, through the tokenizer's
        chat template."""
        if not self.has_chat_template:
            raise NoChatTemplateError("this model's tokenizer has no chat template: send a prompt as inputs")
        return self._run(lambda: self._tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                                     return_tensors="pt"), sampling)

    def _run(self, encode: Callable[[], Any], sampling: Sampling) -> Generation:
        """Everything under the lock, the tokenizer's work included: a Rust tokenizer used from two threads at once
        can fail with "Already borrowed"."""
        import torch

        with self._lock:
            ids = encode()
            prompt_tokens = int(ids.shape[-1])
            if prompt_tokens + sampling.max_new_tokens > self.context_length:
                raise PromptTooLongError(
                    f"the prompt is {prompt_tokens} tokens and {sampling.max_new_tokens} new tokens were asked for: "
                    f"together at most {self.context_length} (the model's context); shorten the prompt or ask for "
                    "fewer tokens", field="inputs")
            ids = ids.to(self.device)
            stop = _StopSequences(self._tokenizer, sampling.stop_sequences, prompt_tokens)
            with _seeded(sampling.seed), torch.inference_mode():
                clock = _FirstToken()
                output = self._model.generate(
                    ids, attention_mask=torch.ones_like(ids), generation_config=self._config(sampling),
                    streamer=clock, stopping_criteria=[stop] if sampling.stop_sequences else None)
                seconds = time.perf_counter() - clock.started
            new = output[0, prompt_tokens:].tolist()
            text = self._tokenizer.decode(new, skip_special_tokens=True)
        cut = _first_stop(text, sampling.stop_sequences)
        if cut is not None:
            text, reason = text[:cut], FINISH_STOP
        elif new and new[-1] in self._eos_ids:
            reason = FINISH_EOS
        else:
            reason = FINISH_LENGTH
        return Generation(text=text, prompt_tokens=prompt_tokens, generated_tokens=len(new), finish_reason=reason,
                          seconds=seconds, first_token_seconds=clock.first_token_seconds(seconds))

    def _config(self, sampling: Sampling) -> Any:
        """A generation config of the request's parameters only: the model's own generation_config.json may turn
        sampling on (many chat models ship temperature 0.6, do_sample true), and the request decides."""
        from transformers import GenerationConfig

        eos = sorted(self._eos_ids)
        pad = self._tokenizer.pad_token_id
        knobs: dict[str, Any] = {}
        if sampling.do_sample:
            knobs = {"temperature": sampling.temperature or 1.0, "top_p": sampling.top_p or 1.0,
                     "top_k": sampling.top_k or 0}
        if sampling.repetition_penalty is not None:
            knobs["repetition_penalty"] = sampling.repetition_penalty
        return GenerationConfig(max_new_tokens=sampling.max_new_tokens, do_sample=sampling.do_sample,
                                eos_token_id=eos or None, pad_token_id=eos[0] if pad is None and eos else pad,
                                **knobs)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the earliest stop sequence in `text` starts, or None."""
    found = [index for index in (text.find(stop) for stop in stops) if index >= 0]
    return min(found) if found else None


@contextlib.contextmanager
def _seeded(seed: int | None) -> Any:
    """torch's global generator seeded for one run, and put back as it was after: generate takes no generator,
    and a seeded request must not make every later unseeded one repeat itself."""
    if seed is None:
        yield
        return
    import torch

    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        yield


class _StopSequences:
    """A transformers StoppingCriteria (duck-typed: the module imports without transformers) that ends generation
    once the new text holds a stop sequence. The text is decoded again at each step because a stop sequence can
    span tokens, and a token's text can depend on the one before it."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], prompt_tokens: int):
        self.tokenizer, self.stops, self.prompt_tokens = tokenizer, stops, prompt_tokens
        self.longest = max((len(stop) for stop in stops), default=0)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        text = self.tokenizer.decode(input_ids[0, self.prompt_tokens:], skip_special_tokens=True)
        done = _first_stop(text, self.stops) is not None
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class _FirstToken:
    """A streamer (transformers' BaseStreamer interface) that only notes when the first new token came.
    generate hands it the prompt first, then each new token."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self._puts = 0

    def put(self, value: Any) -> None:
        self._puts += 1
        if self._puts == 2 and self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass

    def first_token_seconds(self, whole: float) -> float:
        return whole if self.first is None else self.first - self.started
