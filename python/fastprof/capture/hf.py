"""Hooks that put fastprof's recorder inside transformers' ``generate``.

Where the timestamps come from, and why:

- **Host clock: a streamer** (a ``BaseStreamer`` subclass). On CUDA, ``generate`` hands each
  new token to the streamer as ``tokens.cpu()``, a copy that waits for the device, so
  ``put()`` runs the moment the token exists on the host: the time a user would see it. The
  first ``put()`` carries the prompt and is skipped.
- **Device clock: a logits processor.** It runs on the host right after the step's forward pass
  has been queued, before sampling and before the host waits for the token. The event it
  records sits in the stream directly behind the step's kernels, so its GPU timestamp is when
  that step's logits were ready on the device, free of host-side scheduling. An event recorded
  from the streamer instead would land after the host had already waited for the device, and
  would measure nothing the host clock does not.

Both hooks cost one Python call and one native call per token; neither allocates nor
synchronises. transformers inspects the signature of every logits processor at every token;
fastprof's processor carries a ready-made signature so that the inspection costs about 1 us
rather than about 15 us.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastprof.capture.recorder import TokenRecorder

#: The signature fastprof gives its logits processors (see the module docstring).
TWO_ARGS = _TWO_ARGS = inspect.Signature([inspect.Parameter("input_ids", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                               inspect.Parameter("scores", inspect.Parameter.POSITIONAL_OR_KEYWORD)])


def make_hooks(recorder: TokenRecorder) -> tuple[Any, Any]:
    """Returns (streamer, logits_processor) wired to ``recorder``. Imports transformers."""
    from transformers import LogitsProcessor
    from transformers.generation.streamers import BaseStreamer

    class TokenStreamer(BaseStreamer):
        """Marks the host clock each time a generated token reaches the host."""

        def __init__(self) -> None:
            self._mark = recorder.mark_host
            self.prompt_seen = False

        def reset(self) -> None:
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if self.prompt_seen:
                self._mark()
            else:
                self.prompt_seen = True

        def end(self) -> None:
            pass

    class DeviceMarkProcessor(LogitsProcessor):
        """Records a device event behind each step's forward pass; returns scores unchanged."""

        def __init__(self) -> None:
            mark = recorder.mark_device

            def call(input_ids: Any, scores: Any) -> Any:
                mark()
                return scores

            # LogitsProcessorList runs inspect.signature(processor.__call__) for every processor
            # at every token; on a bound method that costs ~15 us. An instance attribute with a
            # ready signature answers it in ~1 us. Python's call syntax still uses the class's
            # __call__ below.
            call.__signature__ = _TWO_ARGS  # type: ignore[attr-defined]
            self.__call__ = call  # type: ignore[method-assign]
            self._mark = mark

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            self._mark()
            return scores

    return TokenStreamer(), DeviceMarkProcessor()


def default_model_config(**overrides: Any) -> Any:
    """The built-in benchmark model: a small Llama-architecture decoder (~42M parameters).

    Built from a config with random weights, so nothing is downloaded.
    """
    from transformers import LlamaConfig

    params = dict(
        vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    params.update(overrides)
    return LlamaConfig(**params)


def build_default_model(*, dtype: Any = None, device: Any = "cpu", seed: int = 0, **overrides: Any) -> Any:
    """Instantiates :func:`default_model_config` with seeded random weights on ``device``."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(default_model_config(**overrides))
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.to(device).eval()


#: The built-in draft model: a smaller sibling of the built-in model (same vocabulary and special
#: tokens, 2 layers of width 256, about 17M parameters, most of them its embeddings), for
#: ``fastprof run --assistant-model builtin``.
DRAFT_OVERRIDES = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2)


def default_draft_config(**overrides: Any) -> Any:
    """The built-in draft model's config (:data:`DRAFT_OVERRIDES` over :func:`default_model_config`)."""
    return default_model_config(**{**DRAFT_OVERRIDES, **overrides})


def build_default_draft(*, dtype: Any = None, device: Any = "cpu", seed: int = 0, target: Any = None,
                        **overrides: Any) -> Any:
    """The built-in draft model with seeded random weights on ``device``. With ``target`` (a
    transformers model), it takes the target's vocabulary size and special token ids, so that it can
    draft for any target (its drafts are random: see :mod:`fastprof.analysis.speculative` on
    acceptance and random weights)."""
    if target is not None:
        cfg = getattr(target, "config", None)
        text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        for key in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(text, key, None)
            if value is not None:
                overrides.setdefault(key, value)
        overrides.setdefault("max_position_embeddings", max(int(getattr(text, "max_position_embeddings", 0) or 0),
                                                            4096))
    return build_default_model(dtype=dtype, device=device, seed=seed + 1, **{**DRAFT_OVERRIDES, **overrides})


def save_default_model(path: str, *, dtype: Any = None, seed: int = 0, **overrides: Any) -> str:
    """Writes the built-in model to ``path`` as a model directory (config and safetensors) for
    ``from_pretrained``. Unlike ``save_pretrained``, it writes on every rank of a torchrun job:
    transformers saves on rank 0 only, and every rank needs the files on its own host."""
    import os

    from safetensors.torch import save_model

    model = build_default_model(dtype=dtype, device="cpu", seed=seed, **overrides)
    os.makedirs(path, exist_ok=True)
    model.config.save_pretrained(path)
    save_model(model, os.path.join(path, "model.safetensors"))
    return path


def random_inputs(vocab_size: int, batch_size: int, prompt_len: int, *, device: Any = "cpu",
                  seed: int = 0) -> dict[str, Any]:
    """Random prompt token ids (no tokenizer needed) and a full attention mask."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (batch_size, prompt_len), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


def load_tokenizer(path: str) -> Any:
    """The tokenizer saved in directory ``path`` (nothing is downloaded), padding on the left as
    batched generation needs; a tokenizer without a pad token pads with its end-of-sequence token.
    Raises OSError or ValueError when the directory holds none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    tok.padding_side = "left"
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"the tokenizer in {path} has neither a pad nor an end-of-sequence token")
        tok.pad_token = tok.eos_token
    return tok


def read_prompts(path: str) -> list[str]:
    """Prompts from a text file, one per line; blank lines are skipped. ValueError when none."""
    with open(path, encoding="utf-8") as f:
        prompts = [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompt (one per line)")
    return prompts


class TextPrompts:
    """Text prompts for one batch: ``batch_size`` of them (the list cycled when shorter), tokenized
    with ``tokenizer`` onto ``device``, left-padded to the longest.

    ``inputs`` holds the first encoding; ``encode()`` tokenizes again and returns generate's
    inputs; ``decode(sequences)`` turns generated ids back into text (the new tokens only);
    ``timed`` says whether both run inside the timed region."""

    def __init__(self, tokenizer: Any, prompts: list[str], batch_size: int, *, device: Any = "cpu",
                 source: str = "text", tokenizer_path: str | None = None, timed: bool = False) -> None:
        if not prompts:
            raise ValueError("no prompts")
        self.tokenizer = tokenizer
        self.texts = [prompts[i % len(prompts)] for i in range(batch_size)]
        self.device = device
        self.source = source
        self.tokenizer_path = tokenizer_path
        self.timed = timed
        self.inputs = self.encode()
        self.prompt_len = int(self.inputs["input_ids"].shape[-1])
        self.prompt_tokens = [int(n) for n in self.inputs["attention_mask"].sum(dim=-1).tolist()]
        self.n_prompts = len(prompts)

    def encode(self) -> dict[str, Any]:
        enc = self.tokenizer(self.texts, return_tensors="pt", padding=True)
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def decode(self, sequences: Any) -> list[str]:
        return self.tokenizer.batch_decode(sequences[:, self.prompt_len:], skip_special_tokens=True)

    def describe(self, untimed_cost: dict[str, float] | None) -> dict[str, Any]:
        """The result's ``inputs`` section."""
        return {"source": self.source, "tokenizer": self.tokenizer_path, "prompts": self.n_prompts,
                "prompt_tokens": self.prompt_tokens, "tokenization_timed": self.timed,
                **(untimed_cost or {})}
