"""Capture: what runs inside the measured process and produces raw data.

Lives here: the native token recorder (:mod:`.recorder`), the GPU sampler (:mod:`.sampler`), the
transformers generate hooks and the built-in model (:mod:`.hf`), environment capture and its
warnings (:mod:`.environment`) and the precision checks behind ``fastprof selftest``
(:mod:`.selftest`). Kernel tracing and stall sources belong here too.

Everything here is on one clock (CLOCK_MONOTONIC ns) and costs as little as possible while the
workload runs. The bottom layer: it imports nothing of fastprof but ``fastprof._core``,
``fastprof._torch`` and ``fastprof.errors``.
"""
