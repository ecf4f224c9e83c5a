"""The order in which each worker process runs a sweep's configurations."""

import itertools
from collections import Counter

from fastprof.measure.runner import AXES, interleaved_order


def _combos(**axes):
    values = {"dtype": ["bfloat16"], "quantization": ["none"], "attn_implementation": ["sdpa"], "compile": ["off"],
              "batch_size": [1], "prompt_len": [8], "max_new_tokens": [8], "speculative": ["none"], **axes}
    return list(itertools.product(*(values[a] for a in AXES)))


def test_shift_zero_is_the_nested_order():
    combos = _combos(batch_size=[1, 2, 4], dtype=["bfloat16", "float16"])
    assert interleaved_order(combos, 0) == combos


def test_every_configuration_takes_every_place_over_the_processes():
    combos = _combos(batch_size=[1, 2, 4])
    orders = [interleaved_order(combos, p) for p in range(3)]
    assert all(sorted(o) == sorted(combos) for o in orders)
    for c in combos:
        assert sorted(o.index(c) for o in orders) == [0, 1, 2]
    assert orders[1][0][4] == 2 and orders[2][0][4] == 4  # batch size first in processes 1 and 2


def test_a_model_is_loaded_once_per_process_whatever_the_order():
    combos = _combos(batch_size=[1, 2], compile=["off", "on"], dtype=["bfloat16", "float16"])
    for p in range(4):
        order = interleaved_order(combos, p)
        loads = [k for k, _ in itertools.groupby(c[:3] for c in order)]
        assert len(loads) == 2  # each dtype's configurations stay together
    assert interleaved_order(combos, 1)[0][0] == "float16"  # odd processes take the loads in reverse


def test_speculative_configurations_stay_behind_their_baseline():
    combos = _combos(batch_size=[1, 2], speculative=["none", "draft=self k=4", "lookup=3"])
    for p in range(3):
        order = interleaved_order(combos, p)
        for i, c in enumerate(order):
            if c[7] != "none":
                assert order[i - 1][4] == c[4] and order[i - 1][7] in ("none", "draft=self k=4")
        first = Counter(c[4] for c in order[:3])
        assert len(first) == 1  # a batch size's three configurations run together


def test_configurations_of_one_model_load_alternate_their_iterations():
    from fastprof.measure.runner import _groups

    combos = _combos(batch_size=[1, 2], compile=["off", "on"], dtype=["bfloat16", "float16"])
    groups = _groups(combos, interleave=True)
    assert [len(g) for g in groups] == [4, 4]  # one group per model load (dtype), all four inside
    assert all(len({combos[i][0] for i in g}) == 1 for g in groups)
    assert sorted(i for g in groups for i in g) == list(range(len(combos)))
    assert _groups(combos, interleave=False) == [[i] for i in range(len(combos))]


def test_speculative_configurations_run_on_their_own():
    from fastprof.measure.runner import _groups

    combos = _combos(batch_size=[1, 2], speculative=["none", "lookup=3"])
    order = [c[4] for c in combos], [c[7] for c in combos]
    groups = _groups(combos, interleave=True)
    # (bs 1 none), (bs 1 lookup), (bs 2 none), (bs 2 lookup): nothing to pair with a neighbour
    assert order[1] == ["none", "lookup=3", "none", "lookup=3"]
    assert groups == [[0], [1], [2], [3]]
    plain = _combos(batch_size=[1, 2, 4])
    assert _groups(plain, interleave=True) == [[0, 1, 2]]
