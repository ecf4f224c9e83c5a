"""Measure: the harness that drives a measurement from start to results.

Lives here: :func:`benchmark` and :func:`benchmark_generate` (warm-up, measured iterations,
output checks, memory clean-up, sampling; :mod:`.driver`), the sweep behind ``fastprof run``
(:mod:`.runner`) and ``fastprof monitor``'s run of a command under the sampler (:mod:`.monitor`).
Worker processes and distributed gathering belong here too.

May import capture, analysis and results; never report or cli (so it prints no tables: the
command line does that).
"""
