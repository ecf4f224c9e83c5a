"""Serving under load on a real GPU: continuous batching of the built-in model at two rates
(marked gpu; skipped without a GPU)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import fastprof  # noqa: E402
from fastprof.analysis.serving import curve  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_model():
    from fastprof.capture.hf import build_default_model

    return build_default_model(dtype=torch.bfloat16, device="cuda")


def test_serving_two_rates_on_the_gpu(gpu_model):
    prompts = torch.randint(3, 32000, (4, 64), generator=torch.Generator().manual_seed(0)).tolist()
    points = []
    for rate in (5.0, 500.0):
        res = fastprof.benchmark_serving(gpu_model, prompts, rate=rate, num_requests=16, max_new_tokens=16,
                                         warmup_requests=2, seed=1)
        s = res.serving
        assert s["counts"]["finished"] == 16 and s["counts"]["total"] == 16
        for r in s["requests"]:
            assert len(r["token_ns"]) == 16
            assert r["arrival_ns"] <= r["submit_ns"] <= r["token_ns"][0] <= r["token_ns"][-1] <= s["window_end_ns"]
            assert r["ttft_s"] == pytest.approx((r["token_ns"][0] - r["arrival_ns"]) / 1e9)
        assert s["token_clock"] in ("transformers", "host")
        # the sampler ran over the window on the GPU
        assert res.hardware["available"], res.hardware.get("reason")
        assert res.hardware["samples"]["timestamps_ns"]
        itl = np.concatenate([np.diff(r["token_ns"]) for r in s["requests"]]) / 1e9
        assert 0 < np.median(itl) < 0.5
        points.append({**s, "summary": res.summary})
    c = curve(points)
    # everything arrives within 32 ms at 500 req/s: the batch holds more requests at once than at 5 req/s
    assert points[1]["occupancy"]["max_generating"] > points[0]["occupancy"]["max_generating"]
    assert c["points"][0]["ttft_s_p99"] > 0
