"""Where the host's time goes inside a decode step: native enter/exit marks of the model's modules
and of transformers' generate loop, on fastprof's clock (CLOCK_MONOTONIC ns).

:class:`HostTracer` wraps the ``forward`` of the modules worth naming (the model, its embeddings,
every decoder layer and, inside each, attention, MLP and norms, the final norm and the LM head;
:func:`select_modules`) with an enter and an exit mark, and puts four markers in the generate
loop (before and after the logits processors, and around the forward pass as the loop sees it).
Every mark is one native call, :class:`fastprof._core.HostSpans` ``mark(code)``, that stores a
timestamp and a code in memory allocated up front: no allocation, no lock, no synchronisation.
Codes: module ``i`` enters as ``2*i`` and exits as ``2*i + 1``; the loop markers are the negative
:data:`LOOP_MARKS`. A wrapper rather than forward hooks: hooks send every call of the module
through torch's slow path (about 3.9 us a call against 0.3 us for the wrapper, measured on a
2-core Xeon), and the wrapper is removed without a trace.

It needs no GPU: on the CPU it is the whole host breakdown. The marks still cost the measured
thread a little (two per module per step), so they run in the traced iterations, after the
timed ones, never in the timed iterations themselves (see :mod:`fastprof.measure.driver`).

Example, a hand-written loop::

    from fastprof.capture.host_trace import HostTracer

    tracer = HostTracer(model)
    with tracer:                      # wraps the modules; unwraps them on exit
        model.generate(**inputs, **tracer.generate_kwargs(), max_new_tokens=32)
    spans = tracer.take()             # HostSpans: t_ns, code, modules, dropped
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

#: Loop marker codes: the generate loop's points between which its own time is split: before and
#: after the logits processors, and around the forward pass as the loop sees it (when
#: ``prepare_inputs_for_generation`` returns and when ``_update_model_kwargs_for_generation`` is
#: entered; these need no module hook, so they also work when the forward pass is compiled). No
#: marker follows the stopping criteria: a criterion must return a tensor, which would add a
#: kernel per step.
LOOP_MARKS = {"processors_begin": -1, "processors_end": -2, "inputs_ready": -3, "forward_done": -4}

#: Module kinds, in the order reports list them.
MODULE_KINDS = ("model", "embedding", "layer", "attention", "mlp", "norm", "rotary", "lm_head", "other")


@dataclass(frozen=True)
class ModuleInfo:
    """One hooked module: its qualified name, kind (:data:`MODULE_KINDS`), the index of the
    decoder layer it belongs to (None outside the layers) and its parent's index (-1 for the root)."""

    name: str
    kind: str
    layer: int | None
    parent: int


@dataclass
class HostSpans:
    """The marks of one traced span: ``t_ns`` (CLOCK_MONOTONIC) and ``code`` columns, the hooked
    ``modules`` (code ``2*i`` / ``2*i+1`` is module ``i``'s enter / exit) and the marks lost past
    the buffer's capacity (``dropped``: never silent)."""

    t_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    modules: list[ModuleInfo] = field(default_factory=list)
    dropped: int = 0

    def __len__(self) -> int:
        return int(self.t_ns.size)

    def window(self, lo: int, hi: int) -> "HostSpans":
        """The marks with lo <= t_ns <= hi."""
        keep = (self.t_ns >= lo) & (self.t_ns <= hi)
        return HostSpans(self.t_ns[keep], self.code[keep], self.modules, self.dropped)


def _kind(name: str, module: Any, root: Any, lm_head: Any) -> str:
    cls = type(module).__name__.lower()
    leaf = name.rsplit(".", 1)[-1].lower()
    if module is root:
        return "model"
    if lm_head is not None and module is lm_head:
        return "lm_head"
    if "embed" in leaf or "embedding" in cls and "rotary" not in cls:
        return "embedding"
    if "rotary" in leaf or "rotary" in cls:
        return "rotary"
    if "norm" in leaf or "norm" in cls:
        return "norm"
    if "attn" in leaf or "attention" in leaf or "attention" in cls:
        return "attention"
    if leaf in ("mlp", "ffn", "feed_forward", "feedforward") or "mlp" in cls or "moe" in leaf:
        return "mlp"
    return "other"


def select_modules(model: Any) -> list[tuple[str, Any, ModuleInfo]]:
    """The modules to hook, parents before children: the root, its children and grandchildren
    (the base model, the LM head, embeddings, final norm, rotary embedding), every element of a
    ``ModuleList`` at those depths as a decoder layer, and each layer's direct children
    (attention, MLP, norms). Containers (``ModuleList``, ``ModuleDict``) are never hooked: they
    have no forward of their own."""
    import torch.nn as nn

    try:
        lm_head = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        lm_head = None
    chosen: list[tuple[str, Any, ModuleInfo]] = []
    index: dict[int, int] = {}

    def add(name: str, module: Any, parent: Any, layer: int | None, kind: str | None = None) -> None:
        if id(module) in index:
            return
        p = index.get(id(parent), -1) if parent is not None else -1
        info = ModuleInfo(name or type(module).__name__, kind or _kind(name, module, model, lm_head), layer, p)
        index[id(module)] = len(chosen)
        chosen.append((name, module, info))

    def visit(name: str, module: Any, parent: Any, depth: int) -> None:
        if isinstance(module, nn.ModuleList):
            for i, child in enumerate(module):
                cname = f"{name}.{i}"
                add(cname, child, parent, i, "layer")
                for sub, grand in child.named_children():
                    if not isinstance(grand, (nn.ModuleList, nn.ModuleDict)):
                        add(f"{cname}.{sub}", grand, child, i)
            return
        if isinstance(module, nn.ModuleDict):
            return
        add(name, module, parent, None)
        if depth < 2:
            for sub, child in module.named_children():
                visit(f"{name}.{sub}" if name else sub, child, module, depth + 1)

    visit("", model, None, 0)
    # The base model that holds the decoder layers (LlamaModel in LlamaForCausalLM) is the model
    # too: its own time is the framework's code around the layers (masks, positions).
    holders = {info.parent for _, _, info in chosen if info.kind == "layer"}
    for i, (name, module, info) in enumerate(chosen):
        if i in holders and info.kind == "other":
            chosen[i] = (name, module, ModuleInfo(info.name, "model", info.layer, info.parent))
    return chosen


class HostTracer:
    """Module and generate-loop marks for the traced iterations (see the module docstring).

    ``modules=False`` places the loop markers only (a compiled forward pass: a mark inside it
    would break the compiled graph). ``capacity``: marks kept until :meth:`take` (two per
    wrapped module per step plus four loop markers); marks past it are counted in ``dropped``.
    Use as a context manager or call :meth:`attach` / :meth:`detach`; the wrappers are removed
    on detach, even after an exception.
    """

    def __init__(self, model: Any, *, capacity: int = 1 << 20, modules: bool = True) -> None:
        from fastprof._native import _core

        self.model = model
        self.selected = select_modules(model) if modules else []
        self.modules = [info for _, _, info in self.selected]
        self._spans = _core.HostSpans(int(capacity))
        self._handles: list[Any] = []
        self._wrapped: list[str] = []

    # ---- marks -------------------------------------------------------------------------
    def attach(self) -> None:
        if self._handles:
            return
        mark = self._spans.mark
        for i, (_, module, _) in enumerate(self.selected):
            self._handles.append(_ForwardMarks(module, mark, 2 * i, 2 * i + 1))
        self._wrap_loop(mark)

    def _wrap_loop(self, mark: Any) -> None:
        """The forward pass as the generate loop sees it: instance attributes that shadow two of
        the model's methods for the traced iterations (removed by :meth:`detach`)."""
        model = self.model
        prepare = getattr(model, "prepare_inputs_for_generation", None)
        update = getattr(model, "_update_model_kwargs_for_generation", None)
        ready, done = LOOP_MARKS["inputs_ready"], LOOP_MARKS["forward_done"]
        if callable(prepare):
            def prepare_marked(*args: Any, **kwargs: Any) -> Any:
                out = prepare(*args, **kwargs)
                mark(ready)
                return out

            model.prepare_inputs_for_generation = functools.wraps(prepare)(prepare_marked)
            self._wrapped.append("prepare_inputs_for_generation")
        if callable(update):
            def update_marked(*args: Any, **kwargs: Any) -> Any:
                mark(done)
                return update(*args, **kwargs)

            model._update_model_kwargs_for_generation = functools.wraps(update)(update_marked)
            self._wrapped.append("_update_model_kwargs_for_generation")
        self._handles.append(_Unwrap(self))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "HostTracer":
        self.attach()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    @property
    def hook_count(self) -> int:
        return 2 * len(self.selected)

    def mark(self, code: int) -> None:
        """One mark with ``code`` now (loop markers and custom points)."""
        self._spans.mark(int(code))

    def generate_kwargs(self) -> dict[str, Any]:
        """A ``logits_processor`` list holding the loop markers, for a ``generate`` call (to keep
        the caller's own processors, use :meth:`wrap_processors`)."""
        return {"logits_processor": self.wrap_processors([])}

    def wrap_processors(self, processors: list[Any]) -> Any:
        """``[begin marker, *processors, end marker]`` as a LogitsProcessorList. transformers runs
        its own processors (min_new_tokens, temperature, ...) before the caller's, so the span
        between the markers holds the caller's processors and fastprof's device mark."""
        from transformers import LogitsProcessorList

        return LogitsProcessorList([_marker_processor(self._spans.mark, LOOP_MARKS["processors_begin"]),
                                    *processors,
                                    _marker_processor(self._spans.mark, LOOP_MARKS["processors_end"])])

    def take(self) -> HostSpans:
        """The marks so far (clears them)."""
        data = self._spans.take()
        return HostSpans(np.asarray(data["t_ns"], dtype=np.int64), np.asarray(data["code"], dtype=np.int32),
                         list(self.modules), int(data["dropped"]))


_MISSING = object()


class _ForwardMarks:
    """Marks around one module's ``forward``: an instance attribute that wraps the forward the
    module has now, so that ``Module.__call__`` keeps its fast path. Forward hooks would make
    every call of the module take torch's slow path: about 3.9 us per call against 0.3 us for
    this wrapper (a small Linear on a 2-core Xeon). ``remove()`` puts back what was there (an
    instance attribute another library set, such as accelerate's hooks, or nothing)."""

    def __init__(self, module: Any, mark: Any, enter: int, leave: int) -> None:
        self.module = module
        self.previous = module.__dict__.get("forward", _MISSING)
        inner = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            mark(enter)
            try:
                return inner(*args, **kwargs)
            finally:
                mark(leave)

        # transformers reads the forward's signature (inspect follows __wrapped__)
        module.forward = functools.wraps(inner)(forward)

    def remove(self) -> None:
        if self.previous is _MISSING:
            self.module.__dict__.pop("forward", None)
        else:
            self.module.forward = self.previous


class _Unwrap:
    """A handle whose ``remove()`` takes the loop wrappers off the model again."""

    def __init__(self, tracer: HostTracer) -> None:
        self.tracer = tracer

    def remove(self) -> None:
        for name in self.tracer._wrapped:
            self.tracer.model.__dict__.pop(name, None)
        self.tracer._wrapped.clear()


def _marker_processor(mark: Any, code: int) -> Any:
    from transformers import LogitsProcessor

    from fastprof.capture.hf import TWO_ARGS

    class _Marker(LogitsProcessor):
        def __init__(self) -> None:
            def call(input_ids: Any, scores: Any) -> Any:
                mark(code)
                return scores

            call.__signature__ = TWO_ARGS  # type: ignore[attr-defined]  # see fastprof.capture.hf
            self.__call__ = call  # type: ignore[method-assign]

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            mark(code)
            return scores

    return _Marker()


def iter_intervals(spans: HostSpans) -> Iterator[tuple[int, int, int]]:
    """(module index, enter ns, exit ns) for every complete enter/exit pair, matched with a stack
    (a module's forward may call itself; an exit without its enter is skipped)."""
    stack: list[tuple[int, int]] = []
    for t, c in zip(spans.t_ns.tolist(), spans.code.tolist()):
        if c < 0:
            continue
        i, leaving = divmod(c, 2)
        if not leaving:
            stack.append((i, t))
            continue
        for depth in range(len(stack) - 1, -1, -1):
            if stack[depth][0] == i:
                _, t0 = stack[depth]
                del stack[depth:]
                yield i, t0, t
                break
