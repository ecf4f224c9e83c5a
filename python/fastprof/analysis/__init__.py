"""Analysis: pure functions from raw data to numbers.

Lives here: per-iteration metrics from traces (:mod:`.metrics`), summary statistics and their
intervals (:mod:`.stats`), GPU samples attributed to iterations and phases (:mod:`.hardware`),
the statistics of comparisons (:mod:`.compare`), the roofline of a decode step (:mod:`.roofline`)
and the verdict on what bounds it (:mod:`.verdict`). Kernel breakdowns and slow-token
attribution belong here too.

May import :mod:`fastprof.capture` (for its raw data types), numpy and scipy; never results,
report, measure or cli. Nothing here touches a device, a file or the console.
"""
