"""The GPU sampler (``from fastprof.sampler import Sampler``): kept as a short path to
:mod:`fastprof.capture.sampler`, where it lives."""

from fastprof.capture.sampler import FIELDS, GPM_FIELDS, Sampler, SamplerResult, cuda_visible_to_nvml

__all__ = ["FIELDS", "GPM_FIELDS", "Sampler", "SamplerResult", "cuda_visible_to_nvml"]
