"""The torch.compile stall source: watched only once dynamo is loaded, never loaded by fastprof.

Each case runs in a fresh interpreter, since whether ``torch._dynamo`` is loaded is process state.
"""

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

PRELUDE = """
import json, sys
import torch
from fastprof.capture.stalls import StallRecorder

def f(x):
    return torch.sin(x) * 2 + 1
"""


def _run(body: str) -> dict:
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_recording_does_not_load_dynamo_when_nothing_was_compiled():
    got = _run("""
        rec = StallRecorder().start()
        loaded = "torch._dynamo" in sys.modules
        f(torch.ones(4))
        rec.stop()
        print(json.dumps({"loaded": loaded, "source": rec.sources["recompile"],
                          "kinds": [e["kind"] for e in rec.events]}))
    """)
    assert got["loaded"] is False
    assert got["source"]["available"] is True and got["source"]["dynamo_loaded"] is False
    assert "recompile" not in got["kinds"]


def test_a_recompilation_in_the_timed_iterations_is_an_event():
    got = _run("""
        g = torch.compile(f, backend="eager", dynamic=False)
        g(torch.ones(4))                      # warm-up: compiled here, loads dynamo
        rec = StallRecorder().start()
        g(torch.ones(4))                      # cached: no event
        g(torch.ones(7, 3))                   # new shape and rank: recompiles
        rec.stop()
        print(json.dumps({"source": rec.sources["recompile"],
                          "events": [e for e in rec.events if e["kind"] == "recompile"]}))
    """)
    assert got["source"] == {"available": True, "dynamo_loaded": True}
    assert len(got["events"]) >= 1
    ev = got["events"][0]
    assert ev["end_ns"] >= ev["start_ns"] > 0


def test_a_first_compilation_inside_the_timed_iterations_is_reported():
    got = _run("""
        rec = StallRecorder().start()
        torch.compile(f, backend="eager")(torch.ones(4))
        rec.stop()
        print(json.dumps({"source": rec.sources["recompile"]}))
    """)
    assert got["source"]["available"] is False
    assert "first used during the timed iterations" in got["source"]["reason"]
