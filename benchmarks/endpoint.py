"""How fast the endpoint server's engine is on this machine's CPU, with the real SmolLM2-135M-Instruct.

Measured through :class:`ferry.endpoint.engine.Engine`, as the server runs it:
  - the import of torch and transformers, and the load of the Hugging Face folder (files to model and tokenizer);
  - for 1 and 2 torch threads, after one warm-up generation: the greedy chat answer to the France question
    (time to the first token, whole time, tokens) and a 64-token continuation of a prose prompt (time to the first
    token, decode speed in tokens a second after the first), median of --runs.

Run: .venv/bin/python benchmarks/endpoint.py [--model DIR] [--runs 3]
(default model: build/endpoints/smollm2, which `make llm` builds, else the fp32 conversion of the GGUF in build/models.)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
PROSE = "Once upon a time, in a small village by the sea,"


def default_model() -> Path:
    built = Path("build/endpoints/smollm2")
    if built.exists():
        return built
    from ferry.generation import smollm2_folder

    return smollm2_folder()  # converted once (about 40 s), then reused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a built endpoint folder or a Hugging Face folder")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    started = time.perf_counter()
    import torch
    import transformers  # noqa: F401  (timed with torch: the server pays both at its start)

    imports = time.perf_counter() - started
    from ferry.endpoint.engine import Engine, Sampling
    from ferry.endpoint.server import resolve_model

    folder, _ = resolve_model(args.model or default_model())
    engine = Engine.load(folder)
    print(f"model: {folder} ({engine.device}, {engine.dtype}, context {engine.context_length})")
    print(f"import torch + transformers: {imports:.1f} s; load from the HF folder: {engine.load_seconds:.2f} s")
    greedy = Sampling(max_new_tokens=64)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        engine.chat(QUESTION, greedy)  # warm-up: the first generation of a process is slower
        chats = [engine.chat(QUESTION, greedy) for _ in range(args.runs)]
        prose = [engine.generate(PROSE, greedy) for _ in range(args.runs)]
        answer = chats[0]
        print(f"{threads} thread{'s' if threads > 1 else ''}:")
        print(f"  chat: {answer.text!r} ({answer.finish_reason}, {answer.prompt_tokens} prompt tokens, "
              f"{answer.generated_tokens} new): first token {_median(chats, 'first_token_seconds') * 1000:.0f} ms, "
              f"whole {_median(chats, 'seconds'):.2f} s")
        print(f"  {prose[0].generated_tokens} tokens of prose: first token "
              f"{_median(prose, 'first_token_seconds') * 1000:.0f} ms, whole {_median(prose, 'seconds'):.2f} s, "
              f"{statistics.median(g.tokens_per_second for g in prose):.1f} tokens/s after the first")


def _median(generations: list, name: str) -> float:
    return statistics.median(getattr(generation, name) for generation in generations)


if __name__ == "__main__":
    main()
