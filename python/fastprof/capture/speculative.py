"""Speculative decoding in transformers' ``generate``: decode steps that emit several tokens, and
each step's draft and verification apart.

transformers runs speculative decoding as *assisted generation*: a candidate generator proposes
draft tokens (a small ``assistant_model``, the prompt's n-grams with ``prompt_lookup_num_tokens``,
or the model's own early layers with ``assistant_early_exit``), then the target model checks all
of them in one forward pass and keeps the longest prefix it agrees with plus one token of its own.
One *step* (one loop iteration of ``_assisted_decoding``) therefore emits 1 to ``k + 1`` tokens,
handed to the streamer together.

What is recorded per step, and where (:func:`make_step_hooks`):

- **Step end, host clock**: the streamer's ``put`` (the step's tokens reach the host), one host mark
  of the token recorder per step, and the number of tokens it carried, written into a
  preallocated array (no allocation per step).
- **Step end, device clock**: a logits processor records one GPU event per step, at its first call
  after the draft: right behind the target's verification forward pass. The draft model's own
  ``generate`` and prompt lookup's candidate check also run the logits processors; those calls are
  ignored.
- **Draft**: the candidate generator's ``get_candidates`` is wrapped (for the measurement only)
  with a mark of a second recorder before and after it (host clock, and a GPU event on a GPU), and
  the number of tokens it proposed (the candidate ids' length minus the input's) is kept.

Derived per step (:mod:`fastprof.analysis.speculative`): the draft time (draft begin to end), the
verification time (draft end to the step's tokens on the host; on the device, to the target's
logits), the loop's remaining time, tokens emitted, accepted draft tokens (emitted minus one, at
most the proposed ones) and proposed ones.

Per-token times: the tokens of one step reach the host together, so each carries the step's end
time. The trace the rest of fastprof reads (:class:`fastprof.capture.recorder.Trace`) has one host
mark (and one device mark) per token: a step's first token's gap is the whole step, its other
tokens' gaps are zero. Inter-token latency statistics therefore stay per token (their mean is the
time per token, comparable with plain decoding) and the per-step statistics sit beside them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: generate() arguments that turn on assisted generation (speculative decoding) in transformers.
SPECULATIVE_KWARGS = ("assistant_model", "prompt_lookup_num_tokens", "assistant_early_exit")

#: Settings transformers reads from the *assistant's* generation config (not from generate's
#: arguments); :func:`assistant_settings` moves them there for a measurement.
ASSISTANT_SETTINGS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")


def method(kwargs: dict[str, Any], model: Any = None) -> str | None:
    """The speculative method that ``generate(**kwargs)`` on ``model`` uses: ``"assistant"``
    (a draft model), ``"prompt_lookup"``, ``"early_exit"``, or None for plain decoding."""
    cfg = kwargs.get("generation_config") or getattr(model, "generation_config", None)

    def given(name: str) -> Any:
        value = kwargs.get(name)
        return value if value is not None else getattr(cfg, name, None)

    if kwargs.get("assistant_model") is not None:
        return "assistant"
    if given("prompt_lookup_num_tokens") is not None:
        return "prompt_lookup"
    if given("assistant_early_exit") is not None:
        return "early_exit"
    return None


class assistant_settings:
    """A context manager that moves :data:`ASSISTANT_SETTINGS` out of generate's ``kwargs`` onto
    the assistant model's ``generation_config``, where transformers reads them, and puts the old
    values back on exit. Without an assistant (prompt lookup), they are dropped from ``kwargs``."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.settings = {k: kwargs.pop(k) for k in ASSISTANT_SETTINGS if k in kwargs}
        self.config = getattr(kwargs.get("assistant_model"), "generation_config", None)
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> dict[str, Any]:
        if self.config is not None:
            for k, v in self.settings.items():
                self.saved[k] = getattr(self.config, k, None)
                setattr(self.config, k, v)
        return self.settings

    def __exit__(self, *exc: Any) -> None:
        for k, v in self.saved.items():
            setattr(self.config, k, v)
        self.saved.clear()


class StepLog:
    """Per-step counts of one iteration, in arrays allocated once: ``tokens[i]`` emitted at step
    ``i``, ``proposed[i]`` draft tokens proposed for it (-1 where no draft was seen)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.tokens = np.zeros(self.capacity, dtype=np.int64)
        self.proposed = np.full(self.capacity, -1, dtype=np.int64)
        self.steps = 0
        self.drafts = 0
        self.overflow = False

    def reset(self) -> None:
        self.tokens[: self.steps] = 0
        self.proposed[: self.drafts] = -1
        self.steps = 0
        self.drafts = 0
        self.overflow = False


def make_step_hooks(recorder: Any, draft_recorder: Any, log: StepLog) -> tuple[Any, Any, Any]:
    """(streamer, logits processor, candidate-generator wrapper) for speculative decoding.

    ``recorder`` (a :class:`fastprof.TokenRecorder`) gets one host mark per step (the streamer) and
    one device mark per step (the processor, right behind the verification forward pass);
    ``draft_recorder`` one ``mark()`` before and one after every draft; ``log`` the tokens per
    step and the drafts' lengths. The wrapper (:class:`CandidateWrap`) is installed on the target
    model around each ``generate`` call."""
    from transformers import LogitsProcessor
    from transformers.generation.streamers import BaseStreamer

    from fastprof.capture.hf import TWO_ARGS

    state = {"armed": False}

    class StepStreamer(BaseStreamer):
        """Marks the host clock once per step and counts the step's tokens."""

        def __init__(self) -> None:
            self._mark = recorder.mark_host
            self.prompt_seen = False

        def reset(self) -> None:
            self.prompt_seen = False
            state["armed"] = False
            log.reset()

        def put(self, value: Any) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            self._mark()
            i = log.steps
            if i < log.capacity:
                log.tokens[i] = value.shape[-1] if value.ndim > 1 else 1
                log.steps = i + 1
            else:
                log.overflow = True

        def end(self) -> None:
            pass

    class VerifyMarkProcessor(LogitsProcessor):
        """A device event at the first logits-processor call after each draft (the target's
        verification); every other call (inside the draft) passes through."""

        def __init__(self) -> None:
            mark = recorder.mark_device

            def call(input_ids: Any, scores: Any) -> Any:
                if state["armed"]:
                    state["armed"] = False
                    mark()
                return scores

            call.__signature__ = TWO_ARGS  # type: ignore[attr-defined]
            self.__call__ = call  # type: ignore[method-assign]
            self._call = call

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            return self._call(input_ids, scores)

    draft_mark = draft_recorder.mark

    def wrap_candidates(get_candidates: Any) -> Any:
        def marked(input_ids: Any, *args: Any, **kwargs: Any) -> Any:
            draft_mark()
            out = get_candidates(input_ids, *args, **kwargs)
            draft_mark()
            j = log.drafts
            if j < log.capacity:
                ids = out[0] if isinstance(out, tuple) else out
                log.proposed[j] = int(ids.shape[-1]) - int(input_ids.shape[-1])
                log.drafts = j + 1
            state["armed"] = True
            return out

        return marked

    return StepStreamer(), VerifyMarkProcessor(), CandidateWrap(wrap_candidates)


class CandidateWrap:
    """Wraps the candidate generator that the target model's ``generate`` builds: while installed
    (``with wrap.installed(model):``), ``model._get_candidate_generator`` is an instance attribute
    that calls the original and wraps the returned generator's ``get_candidates`` (an instance
    attribute on that generator, made per generate call). ``available`` is False where this
    transformers has no ``_get_candidate_generator``: no draft marks then."""

    def __init__(self, wrap_candidates: Any) -> None:
        self._wrap = wrap_candidates
        self.seen = 0

    def installed(self, model: Any) -> "_Installed":
        return _Installed(self, model)


class _Installed:
    def __init__(self, wrap: CandidateWrap, model: Any) -> None:
        self.wrap = wrap
        self.model = model
        self.previous: Any = None
        self.available = callable(getattr(model, "_get_candidate_generator", None))

    def __enter__(self) -> "_Installed":
        if not self.available:
            return self
        model, wrap = self.model, self.wrap
        self.previous = model.__dict__.get("_get_candidate_generator", _MISSING)
        original = model._get_candidate_generator

        def get_candidate_generator(*args: Any, **kwargs: Any) -> Any:
            generator = original(*args, **kwargs)
            generator.get_candidates = wrap._wrap(generator.get_candidates)
            wrap.seen += 1
            return generator

        model._get_candidate_generator = get_candidate_generator
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.available:
            return
        if self.previous is _MISSING:
            self.model.__dict__.pop("_get_candidate_generator", None)
        else:
            self.model._get_candidate_generator = self.previous


_MISSING = object()


def expand(step_host_ns: np.ndarray, step_device_ns: np.ndarray | None, tokens: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-token marks from per-step marks: each of a step's tokens carries the step's time.
    Device marks are expanded only when there is one per step (else returned as they are, and
    the caller reports device timing unavailable)."""
    host = np.repeat(np.asarray(step_host_ns, dtype=np.int64), tokens) if step_host_ns.size == tokens.size \
        else np.asarray(step_host_ns, dtype=np.int64)
    device = step_device_ns
    if device is not None and device.size == tokens.size:
        device = np.repeat(np.asarray(device, dtype=np.int64), tokens)
    return host, device
