"""fastprof run --processes N end to end on the CPU, and compare over processes as a CI gate:
an A/A comparison passes the gate, an A/B comparison with an injected per-step delay fails it."""

import json
import time

import pytest

from fastprof import cli
from fastprof.results.sweep import load, validate

pytest.importorskip("transformers")

SMALL = ["--prompt-len", "8", "--max-new-tokens", "8", "--iterations", "6", "--warmup", "1", "--quiet",
         "--device", "cpu", "--sample-interval-ms", "0", "--kernel-trace", "0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import os

    d = tmp_path_factory.mktemp("processes")
    out = {}
    # B: 60 ms more per step, about four times the CPU decode step, so that even a noisy machine
    # (another job on the same cores) cannot hide it among three processes.
    # B runs with the default number of processes (--processes not given).
    for name, delay, processes in (("a", None, ["--processes", "3"]), ("a2", None, ["--processes", "3"]),
                                   ("b", "60", [])):
        if delay:
            os.environ["FASTPROF_STEP_DELAY_MS"] = delay
        try:
            assert cli.main(["run", *processes, *SMALL, "-o", str(d / f"{name}.json")]) == 0
        finally:
            os.environ.pop("FASTPROF_STEP_DELAY_MS", None)
        out[name] = d / f"{name}.json"
    return out


def test_every_process_is_kept(runs):
    doc = json.loads(runs["a"].read_text())
    validate(doc)
    result = load(runs["a"]).runs[0].result
    assert result.processes["count"] == 3
    assert [it["process"] for it in result.iterations] == [0] * 6 + [1] * 6 + [2] * 6
    pids = [p["pid"] for p in result.processes["per_process"]]
    assert len(set(pids)) == 3 and all(isinstance(p, int) for p in pids)  # three distinct processes
    assert result.processes["spread"]["itl_s"]["within_process_cv"] is not None
    # On Linux the workers are forked from the fork server, and the result says so.
    assert result.processes["start"] == "fork-server" and result.processes["start_note"] is None
    assert [p["start"] for p in result.processes["per_process"]] == ["fork-server"] * 3
    assert result.processes["prepare"] == "one after the other" and result.processes["prepare_note"] is None
    assert all("waited_s" not in p for p in result.processes["per_process"])


def test_the_default_is_the_calibrated_number_of_processes(runs):
    from fastprof.analysis.compare import RECOMMENDED_PROCESSES
    from fastprof.measure.workers import DEFAULT_PROCESSES, default_processes

    assert DEFAULT_PROCESSES == RECOMMENDED_PROCESSES == 5
    result = load(runs["b"]).runs[0].result
    assert result.processes["count"] == DEFAULT_PROCESSES
    assert len(result.iterations) == 6 * DEFAULT_PROCESSES
    assert result.processes["start"] == "fork-server"
    assert default_processes(None) == DEFAULT_PROCESSES
    assert default_processes(2) == 2
    assert default_processes(None, "dp") == 1 and default_processes(None, serving=True) == 1


def test_a_a_passes_the_gate_and_a_b_fails_it(runs, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    # A/A: at --alpha 0.01 (Holm over every metric) a false alarm is a 1-in-100 event at most.
    code = cli.main(["compare", str(runs["a"]), str(runs["a2"]), "--fail-on-regression", "5", "--alpha", "0.01"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "geometric means over processes" in out and "3/3 p" in out
    code = cli.main(["compare", str(runs["a"]), str(runs["b"]), "--fail-on-regression", "5",
                     "--json", str(tmp_path / "c.json")])
    assert code == 1, capsys.readouterr().out
    rows = {r["metric"]: r for r in json.loads((tmp_path / "c.json").read_text())["comparisons"][0]["rows"]}
    assert rows["itl_s"]["unit"] == "process" and rows["itl_s"]["verdict"] == "regression"
    assert rows["itl_s"]["n_a"] == 3 and rows["itl_s"]["n_b"] == 5
    assert rows["itl_s"]["p_adjusted"] >= rows["itl_s"]["p_value"]


def test_processes_refused_where_they_do_not_apply(capsys):
    assert cli.main(["run", "--processes", "2", "--serving", "--rate", "1"]) == 2
    assert "--processes" in capsys.readouterr().err


def test_fresh_interpreters_when_asked_give_the_same_statistics(runs, tmp_path, monkeypatch):
    """FASTPROF_WORKER_START=fresh: every worker a fresh interpreter, as before the fork server;
    the result has the same shape and says how its workers started."""
    monkeypatch.setenv("FASTPROF_WORKER_START", "fresh")
    out = tmp_path / "fresh.json"
    assert cli.main(["run", "--processes", "2", *SMALL, "-o", str(out)]) == 0
    validate(json.loads(out.read_text()))
    fresh, forked = load(out).runs[0].result, load(runs["a"]).runs[0].result
    assert fresh.processes["start"] == "fresh-interpreter"
    assert "FASTPROF_WORKER_START=fresh" in fresh.processes["start_note"]
    assert [p["start"] for p in fresh.processes["per_process"]] == ["fresh-interpreter"] * 2
    assert len({p["pid"] for p in fresh.processes["per_process"]}) == 2
    assert set(fresh.summary) == set(forked.summary)
    assert set(fresh.processes) == set(forked.processes)
    assert set(fresh.processes["spread"]) == set(forked.processes["spread"])
    assert set(fresh.config) == set(forked.config)


def test_configurations_alternate_over_the_worker_processes(tmp_path, capsys):
    """Each worker starts at another configuration: over two processes, each of two batch sizes
    ran first once and second once, and the merged result says where."""
    out = tmp_path / "two.json"
    small = [a for a in SMALL]
    small[small.index("--iterations") + 1] = "2"
    assert cli.main(["run", "--processes", "2", "--batch-size", "1,2", *small, "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    validate(doc)
    sweep = load(out)
    positions = {r.config["batch_size"]: [p["position"] for p in r.result.processes["per_process"]]
                 for r in sweep.runs}
    assert positions == {1: [0, 1], 2: [1, 0]}
    # The two batch sizes of this one run, compared process by process.
    js = tmp_path / "by.json"
    capsys.readouterr()
    assert cli.main(["compare", str(out), "--by", "batch_size", "--json", str(js)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "paired by worker process (each process measured both, its timing ratios the median over rounds" in said
    rows = json.loads(js.read_text())["comparisons"][0]["rows"]
    assert rows and all(r["paired"] and r["n_a"] == 2 and r["n_b"] == 2 for r in rows)
    itl = next(r for r in rows if r["metric"] == "itl_s")
    assert itl["median_a"] > 0 and itl["ratio"] > 0 and itl["unit"] == "process"
    # each worker alternated the two batch sizes' timed iterations: its ratio is taken round by round
    assert itl["paired_rounds"] is True


def test_compare_by_refuses_what_it_cannot_do(runs, capsys):
    assert cli.main(["compare", str(runs["a"]), str(runs["a2"]), "--by", "batch_size"]) == 2
    assert "give exactly one file" in capsys.readouterr().err
    assert cli.main(["compare", str(runs["a"]), "--by", "nothing"]) == 2
    assert "no configuration has the config key 'nothing'" in capsys.readouterr().err
    assert cli.main(["compare", str(runs["a"]), "--by", "batch_size"]) == 2
    assert "nothing to compare" in capsys.readouterr().err


def _timed_span(result, process):
    its = [it["host"] for it in result.iterations if it["process"] == process]
    return min(h["start_ns"] for h in its), max(h["end_ns"] for h in its)


@pytest.mark.parametrize("handoff", [None, "exit"])
def test_workers_prepared_together_measure_one_at_a_time(tmp_path, monkeypatch, handoff):
    """The default on a CUDA GPU with memory to spare: every worker is forked at once and
    prepares beside the others, but no worker's timed iterations overlap another's: each waits
    for its turn, the last ones for as long as the ones before them measured. By default a worker
    hands its turn on once its last iteration has run, before it has built its result and exited;
    with FASTPROF_WORKER_HANDOFF=exit, once it has exited."""
    from fastprof.measure import workers

    monkeypatch.delenv("FASTPROF_WORKER_PREPARE", raising=False)
    if handoff is None:
        monkeypatch.delenv("FASTPROF_WORKER_HANDOFF", raising=False)
    else:
        monkeypatch.setenv("FASTPROF_WORKER_HANDOFF", handoff)
    given = []  # (worker, whether the worker before it had exited when it got its turn)
    real_give = workers._Together._give

    def give(self, p):
        if p not in self._given:
            given.append((p, p > 0 and self.pids[p - 1] in self.rcs))
        return real_give(self, p)

    monkeypatch.setattr(workers._Together, "_give", give)
    exits = {}  # pid: when the parent learnt of its exit (CLOCK_MONOTONIC, as the marks)
    real_read = workers._Together._read

    def read(self, timeout):
        real_read(self, timeout)
        for pid in self.rcs:
            exits.setdefault(pid, time.monotonic_ns())

    monkeypatch.setattr(workers._Together, "_read", read)
    # The run's device as the workers see it stays the CPU; the decision is taken as on a GPU
    # with 80 GiB free (on the CPU, preparing side by side is never the default: next tests).
    real = workers.run_processes
    monkeypatch.setattr(workers, "run_processes", lambda *a, **k: real(*a, **dict(k, device="cuda:0")))
    monkeypatch.setattr(workers, "_gpu_free_bytes", lambda: 80 * 2**30)
    out = tmp_path / "together.json"
    assert cli.main(["run", "--processes", "3", *SMALL, "-o", str(out)]) == 0
    doc = json.loads(out.read_text())
    validate(doc)
    # the schema knows the new fields: a wrong value is refused
    from fastprof.results.io import ResultsFileError

    for section, key, bad in ((doc["processes"], "prepare", "sideways"), (doc["processes"], "handoff", "soon"),
                              (doc["processes"]["per_process"][0], "waited_s", "long"),
                              (doc["processes"]["per_process"][0], "turn_s", "long"),
                              (doc["processes"]["per_process"][0], "overlap_s", "long")):
        good, section[key] = section[key], bad
        with pytest.raises(ResultsFileError):
            validate(doc)
        section[key] = good
    result = load(out).runs[0].result
    procs = result.processes
    assert procs["prepare"] == "together" and procs["start"] == "fork-server" and procs["prepare_note"] is None
    assert procs["handoff"] == (handoff or "measured")
    # measured: each turn handed on while the worker before was still alive; exit: after it exited
    assert given == [(0, False), (1, handoff == "exit"), (2, handoff == "exit")]
    rows = procs["per_process"]
    assert len({r["pid"] for r in rows}) == 3 and [it["process"] for it in result.iterations] == [0] * 6 + [1] * 6 + [2] * 6
    assert all(r["ready_s"] > 0 and r["waited_s"] >= 0 and r["turn_s"] > 0 and r["overlap_s"] >= 0 for r in rows)
    assert rows[0]["overlap_s"] < 0.5  # nothing before the first
    if handoff is None:  # each turn began while the worker before was finishing
        assert all(r["overlap_s"] > 0 for r in rows[1:]), rows
    spans = [_timed_span(result, p) for p in range(3)]
    for p in (1, 2):
        assert spans[p - 1][1] < spans[p][0], spans  # one after the other, in order
        # and only once the worker before had exited
        assert exits[rows[p - 1]["pid"]] < spans[p][0], (exits, rows, spans)
        # Worker p was ready before worker p - 1 began its timed iterations and waited through them.
        assert rows[p]["waited_s"] >= (spans[p - 1][1] - spans[p - 1][0]) / 1e9, (rows, spans)


def test_workers_prepared_together_are_ended_when_the_fork_server_dies(tmp_path, monkeypatch):
    """The fork server dies while prepared workers wait for their turn: they are ended (none is
    left waiting, holding its model), the rest of the workers start as fresh interpreters, and the
    result says what happened."""
    from pathlib import Path

    from fastprof.measure import workers

    monkeypatch.setenv("FASTPROF_WORKER_PREPARE", "together")
    monkeypatch.setattr(workers, "_together_refusal", lambda device: None)
    seen = {}
    real = workers._Together.run

    def run(self, p):
        if p == 1:
            seen["pids"] = list(self.pids)
            self.server.proc.kill()
            self.server.proc.wait()
        return real(self, p)

    monkeypatch.setattr(workers._Together, "run", run)
    out = tmp_path / "died.json"
    small = [a for a in SMALL]
    small[small.index("--iterations") + 1] = "2"
    assert cli.main(["run", "--processes", "3", *small, "-o", str(out)]) == 0
    procs = load(out).runs[0].result.processes
    assert [r["start"] for r in procs["per_process"]] == ["fork-server", "fresh-interpreter", "fresh-interpreter"]
    assert procs["start"] == "mixed" and "fork server stopped at worker 2" in procs["start_note"]
    assert procs["prepare"] == "one after the other" and "prepared together until then" in procs["prepare_note"]
    for pid in seen["pids"][1:]:  # the two that were waiting: gone (or a zombie of a gone parent)
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "\tZ" in status.read_text().split("State:")[1].splitlines()[0], pid


def test_on_the_cpu_workers_are_not_prepared_together(tmp_path, monkeypatch, capsys):
    """Where the model runs on the CPU, preparing side by side only competes for the same cores:
    asked for, the run says so and prepares the workers one after the other."""
    from fastprof.measure.workers import _together_refusal

    assert _together_refusal("cuda:0") is None and _together_refusal(None) is None
    monkeypatch.setenv("FASTPROF_WORKER_PREPARE", "together")
    out = tmp_path / "cpu.json"
    small = [a for a in SMALL if a != "--quiet"]
    small[small.index("--iterations") + 1] = "2"
    assert cli.main(["run", "--processes", "2", *small, "-o", str(out)]) == 0
    procs = load(out).runs[0].result.processes
    assert procs["prepare"] == "one after the other"
    assert "does not apply on cpu" in procs["prepare_note"]
    assert "does not apply on cpu" in capsys.readouterr().err
    assert all("waited_s" not in r for r in procs["per_process"])


def test_a_worker_prepared_together_waits_for_its_turn_and_leaves_when_the_run_is_gone(tmp_path):
    """The worker's side (fastprof.measure.turn): nothing to wait for without the environment
    variable; with it, 'ready' is said and the worker sleeps until the byte comes; a worker whose
    run has gone exits instead of waiting for ever."""
    import os
    import subprocess
    import sys
    import time

    code = ("import sys; from fastprof.measure import turn; "
            "print(turn.pending(), flush=True); w = turn.wait_turn(); print(w, turn.pending(), turn.wait_turn())")
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={k: v for k, v in os.environ.items() if not k.startswith("FASTPROF_WORKER_")})
    assert plain.stdout.split() == ["False", "None", "False", "None"]

    prefix = tmp_path / "turn-0"
    os.mkfifo(f"{prefix}.go")
    env = dict(os.environ, FASTPROF_WORKER_TURN=str(prefix), FASTPROF_WORKER_PARENT=str(os.getpid()))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "True"
    deadline = time.monotonic() + 60
    while not (tmp_path / "turn-0.ready").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None  # still waiting
    fd = os.open(f"{prefix}.go", os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"g")
    os.close(fd)
    waited, pending, again = proc.communicate(timeout=30)[0].split()
    assert proc.returncode == 0 and float(waited) >= 0.3 and pending == "False" and again == "None"

    # Its run gone (the parent pid names no process): the worker exits within about a second.
    prefix = tmp_path / "turn-1"
    os.mkfifo(f"{prefix}.go")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    env = dict(os.environ, FASTPROF_WORKER_TURN=str(prefix), FASTPROF_WORKER_PARENT=str(gone.pid))
    left = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert left.returncode == 1 and "is gone" in left.stderr
    assert (tmp_path / "turn-1.ready").exists()


def test_the_fork_server_forks_a_batch_together(tmp_path):
    """The fork server's 'together' request: every child forked before any is waited for, each
    exit said with its pid as it comes; a plain request still works after it."""
    from fastprof.measure import workers

    server = workers._ForkServer(tmp_path)
    try:
        requests = [{"argv": argv, "stderr": str(tmp_path / f"{i}.stderr"), "cwd": str(tmp_path), "env": None}
                    for i, argv in enumerate((["--version"], ["no-such-command"], ["--version"]))]
        pids = server.start_together(requests)
        assert len(set(pids)) == 3
        rcs = {}
        deadline = time.monotonic() + 120
        while len(rcs) < 3 and time.monotonic() < deadline:
            rcs.update({m["pid"]: m["rc"] for m in server.messages(1.0) if "rc" in m})
        assert rcs == {pids[0]: 0, pids[1]: 2, pids[2]: 0}
        assert "invalid choice" in (tmp_path / "1.stderr").read_text()
        pid, rc = server.run(["--version"], tmp_path / "after.stderr")
        assert rc == 0 and pid not in pids
    finally:
        server.close()


@pytest.mark.parametrize("start", ["fork", "fresh", "together"])
def test_bad_input_in_a_worker_stops_the_run_at_once(start, tmp_path, capsys, monkeypatch):
    """A directory that holds no model passes the parent's checks; the first worker refuses it
    (exit code 2) and the run stops there with the worker's one-line error (prepared together,
    the others are ended)."""
    monkeypatch.setenv("FASTPROF_WORKER_START", "fork" if start == "together" else start)
    if start == "together":
        from fastprof.measure import workers

        monkeypatch.setenv("FASTPROF_WORKER_PREPARE", "together")
        monkeypatch.setattr(workers, "_together_refusal", lambda device: None)
    (tmp_path / "empty").mkdir()
    argv = ["run", "--model", str(tmp_path / "empty"), *[a for a in SMALL if a != "--quiet"], "-o", str(tmp_path / "x.json")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "fastprof: error: argument --model: cannot load" in err, err
    assert "worker process 1/5" in err and "worker process 2/5" not in err, err
    assert not (tmp_path / "x.json").exists()


def test_the_fork_server_reports_exit_codes_and_stderr_and_survives_its_workers(tmp_path):
    """The fork server's protocol without a model: a worker's exit code and stderr come back;
    when the server is gone, the parent is told (and starts fresh interpreters instead)."""
    from fastprof.measure import workers

    server = workers._ForkServer(tmp_path)
    try:
        pid, rc = server.run(["--version"], tmp_path / "ok.stderr")
        assert rc == 0 and pid != server.proc.pid
        pid2, rc = server.run(["no-such-command"], tmp_path / "bad.stderr")
        assert rc == 2 and pid2 != pid
        assert "invalid choice" in (tmp_path / "bad.stderr").read_text()
        server.proc.kill()
        server.proc.wait()
        with pytest.raises(workers._ServerGone):
            server.run(["--version"], tmp_path / "gone.stderr")
    finally:
        server.close()


def test_the_fork_server_starts_before_the_checks_and_is_ended_when_they_fail(tmp_path, capsys, monkeypatch):
    """The fork server starts first, so that its imports run beside the parent's checks; when a
    check refuses the input, the server (still importing) is killed at once, not left behind."""
    from fastprof.measure import workers

    started = []
    real = workers.prestart

    def spy():
        server = real()
        started.append(server)
        return server

    monkeypatch.setattr(workers, "prestart", spy)
    # 999999 positions: refused by the parent's position check, after the server has started.
    argv = ["run", "--prompt-len", "999999", "--max-new-tokens", "8", "--device", "cpu", "--quiet",
            "-o", str(tmp_path / "x.json")]
    assert cli.main(argv) == 2
    assert "max_position_embeddings" in capsys.readouterr().err
    assert len(started) == 1 and started[0] is not None
    assert started[0].proc.poll() is not None  # ended, not left importing
    assert started[0]._own_tmp is not None and not started[0]._own_tmp.exists()


def test_the_run_uses_the_prestarted_fork_server(tmp_path, monkeypatch):
    """One fork server per run: the one started before the checks serves every worker."""
    from fastprof.measure import workers

    made = []
    real = workers._ForkServer.__init__

    def counting(self, tmp, **kwargs):
        made.append(tmp)
        real(self, tmp, **kwargs)

    monkeypatch.setattr(workers._ForkServer, "__init__", counting)
    out = tmp_path / "two.json"
    assert cli.main(["run", "--processes", "2", *SMALL, "-o", str(out)]) == 0
    assert len(made) == 1
    result = load(out).runs[0].result
    assert result.processes["start"] == "fork-server" and len(result.processes["per_process"]) == 2


def test_no_fork_server_where_no_workers_run(tmp_path, monkeypatch):
    from fastprof.measure import workers

    monkeypatch.setattr(workers, "prestart", lambda: pytest.fail("a fork server for a one-process run"))
    assert cli.main(["run", "--processes", "1", *SMALL, "-o", str(tmp_path / "one.json")]) == 0


@pytest.mark.parametrize("warmup", [3, 0])
def test_a_worker_prepared_together_warms_up_before_its_turn_and_again_after(tiny_llama, monkeypatch, warmup):
    """generate_steps in a worker prepared together: its whole warm-up (at least the first call)
    runs before it waits for its turn, untimed beside the others; after the wait, turn.REWARM
    iterations (none where the warm-up is 0), and more while the worker before it has not exited,
    come before the timed ones, which start only once it is alone."""
    import torch

    from fastprof.measure import turn
    from fastprof.measure.driver import generate_steps

    calls: list[str] = []
    real = tiny_llama.generate

    def counting(*args, **kwargs):
        calls.append("generate")
        return real(*args, **kwargs)

    waiting = {"pending": True}
    monkeypatch.setattr(turn, "pending", lambda: waiting["pending"])

    def wait_turn():
        waiting["pending"] = False
        calls.append("turn")
        return 0.0

    answers = [False, False, True]  # the worker before it is still finishing, twice

    def alone(wait):
        calls.append("alone" if wait else "alone?")
        return True if wait else answers.pop(0)

    monkeypatch.setattr(turn, "wait_turn", wait_turn)
    monkeypatch.setattr(turn, "alone", alone)
    monkeypatch.setattr(tiny_llama, "generate", counting)
    steps = generate_steps(tiny_llama, torch.randint(0, 256, (1, 4)), max_new_tokens=3, warmup=warmup,
                           iterations=2, kernel_trace_iterations=0, sample_interval_ms=None)
    assert next(steps) == "warm"
    before = max(warmup, 1)
    after = min(warmup, turn.REWARM)
    assert turn.REWARM >= 1
    # With a warm-up: more re-warm iterations while the worker before finishes; without one, no
    # untimed iteration the user did not ask for (it only waits).
    meanwhile = ["alone?", "generate", "alone?", "generate", "alone?"] if warmup else []
    assert calls == ["generate"] * before + ["turn"] + ["generate"] * after + meanwhile + ["alone"]
    n = len(calls)
    assert [next(steps), next(steps)] == ["timed", "timed"]
    assert calls[n:] == ["generate"] * 2


def test_how_workers_are_prepared_by_default_and_when_asked(tmp_path, monkeypatch):
    """FASTPROF_WORKER_PREPARE: by default together on a CUDA GPU where every worker's model fits
    in the free memory at once (else one after the other, saying why), never on the CPU; 'serial'
    and 'together' (no memory check) override it; a wrong value is said and read as auto."""
    from fastprof.measure import workers

    gib = 2**30
    free = {"bytes": 80 * gib}
    monkeypatch.setattr(workers, "_gpu_free_bytes", lambda: free["bytes"])
    model = tmp_path / "m"
    model.mkdir()
    with open(model / "model.safetensors", "wb") as f:  # sparse: 10 GiB of weights on disk
        f.truncate(10 * gib)
    (model / "config.json").write_text("{}")
    (model / "original").mkdir()  # another copy, which transformers does not load: not counted
    with open(model / "original" / "consolidated.00.pth", "wb") as f:
        f.truncate(10 * gib)
    plan = workers._prepare_plan
    monkeypatch.delenv("FASTPROF_WORKER_PREPARE", raising=False)
    assert plan("cuda:0", 5, True, None, ["auto"]) == (True, None)           # built-in model: small
    assert plan("cpu", 5, True, None, ["auto"]) == (False, None)
    assert plan("cuda:0", 5, False, None, ["auto"]) == (False, None)         # fresh interpreters
    # 5 x (10 GiB + 2 GiB) = 60 GiB: fits in 90% of 80 GiB, not in 90% of 60 GiB
    assert plan("cuda:0", 5, True, str(model), ["bfloat16"]) == (True, None)
    together, note = plan("cuda:0", 5, True, str(model), ["bfloat16", "float32"])  # float32: twice
    assert not together and "110.0 GiB" in note and "80.0 GiB free" in note and note.endswith("one after the other")
    free["bytes"] = 60 * gib
    together, note = plan("cuda:0", 5, True, str(model), ["bfloat16"])
    assert not together and "60.0 GiB at once" in note
    free["bytes"] = None
    together, note = plan("cuda:0", 5, True, str(model), ["bfloat16"])
    assert not together and "NVML" in note
    together, note = plan("cuda:0", 5, True, str(tmp_path / "nowhere"), ["bfloat16"])
    assert not together and "not known" in note
    monkeypatch.setenv("FASTPROF_WORKER_PREPARE", "together")                 # no memory check
    assert plan("cuda:0", 5, True, str(model), ["bfloat16"]) == (True, None)
    together, note = plan("cpu", 5, True, None, ["auto"])
    assert not together and "does not apply on cpu" in note
    together, note = plan("cuda:0", 5, False, None, ["auto"])
    assert not together and "fork server" in note
    monkeypatch.setenv("FASTPROF_WORKER_PREPARE", "serial")
    free["bytes"] = 80 * gib
    assert plan("cuda:0", 5, True, None, ["auto"]) == (False, None)
    monkeypatch.setenv("FASTPROF_WORKER_PREPARE", "sideways")
    together, note = plan("cuda:0", 5, True, None, ["auto"])
    assert together and "'sideways' is not one of auto, together, serial: auto" in note


def test_the_free_memory_of_the_gpus_this_process_may_use(monkeypatch):
    """The memory check reads the least free memory of the visible GPUs (NVML), following
    CUDA_VISIBLE_DEVICES by index or UUID; None where NVML says nothing."""
    from fastprof.capture import environment
    from fastprof.measure import workers

    gpus = [{"index": 0, "uuid": "GPU-a", "memory_total_bytes": 100, "memory_used_bytes": 90},
            {"index": 1, "uuid": "GPU-b", "memory_total_bytes": 100, "memory_used_bytes": 30},
            {"index": 2, "uuid": "GPU-c", "memory_total_bytes": 100, "memory_used_bytes": 50}]
    monkeypatch.setattr(environment, "nvml_gpus", lambda: (gpus, {}, None))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert workers._gpu_free_bytes() == 10
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,GPU-c")
    assert workers._gpu_free_bytes() == 50
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert workers._gpu_free_bytes() == 70
    monkeypatch.setattr(environment, "nvml_gpus", lambda: ([], {}, "NVML unavailable"))
    assert workers._gpu_free_bytes() is None


def test_running_out_of_memory_prepared_together_says_what_to_do():
    """A worker that ran out of GPU memory while every worker's model was in memory at once: the
    warning names FASTPROF_WORKER_PREPARE=serial; not for other errors, nor one after the other."""
    from fastprof.measure.workers import _out_of_memory_hint

    oom = ["process 3: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"]
    assert "FASTPROF_WORKER_PREPARE=serial" in _out_of_memory_hint(oom, True)
    assert _out_of_memory_hint(oom, False) is None
    assert _out_of_memory_hint(["process 1: ValueError: bad prompt"], True) is None
    assert _out_of_memory_hint([], True) is None


def test_a_worker_hands_its_turn_on_once_its_last_iteration_has_run(tmp_path, monkeypatch):
    """A worker's sweep says it is done with the machine (turn.release) once the last iteration of
    its last configuration has run, traced ones included, and before that configuration's result
    is built and written."""
    import transformers

    from fastprof.measure import turn

    calls = {"generate": 0}
    releases = []
    out = tmp_path / "sweep.json"
    real = transformers.LlamaForCausalLM.generate

    def counting(self, *args, **kwargs):
        calls["generate"] += 1
        return real(self, *args, **kwargs)

    def release():
        runs = len(json.loads(out.read_text())["runs"]) if out.exists() else 0
        releases.append((calls["generate"], runs))
        return True

    monkeypatch.setattr(transformers.LlamaForCausalLM, "generate", counting)
    monkeypatch.setattr(turn, "release", release)
    small = [a for a in SMALL]
    small[small.index("--kernel-trace") + 1] = "1"
    small[small.index("--max-new-tokens") + 1] = "4,5"
    assert cli.main(["run", "--processes", "1", *small, "-o", str(out)]) == 0
    # 2 configurations of 1 warm-up, 6 timed and 1 traced iteration each: all 16 had run at the
    # first release, and only the first configuration's result was written.
    assert calls["generate"] == 16 and releases[0] == (16, 1), releases
    assert len(load(out).runs) == 2


def test_release_says_a_worker_is_done_once_and_only_after_its_turn(tmp_path, monkeypatch):
    """turn.release: nothing outside a prepared worker or before its turn; then the file the
    parent waits for, once, and a lower CPU priority for the rest of the process."""
    import os

    from fastprof.measure import turn

    niced = []
    monkeypatch.setattr(os, "nice", lambda n: niced.append(n))
    monkeypatch.setattr(turn, "_released", False)
    monkeypatch.setattr(turn, "_asked", True)
    monkeypatch.delenv(turn.TURN_ENV, raising=False)
    assert turn.release() is False
    prefix = tmp_path / "turn-0"
    monkeypatch.setenv(turn.TURN_ENV, str(prefix))
    monkeypatch.setattr(turn, "_asked", False)
    assert turn.release() is False and not (tmp_path / "turn-0.done").exists()  # no turn yet
    monkeypatch.setattr(turn, "_asked", True)
    assert turn.release() is True and (tmp_path / "turn-0.done").exists() and niced == [10]
    assert turn.release() is False and niced == [10]


@pytest.mark.parametrize("together", [False, True])
def test_a_worker_times_only_once_the_worker_before_it_has_exited(tmp_path, monkeypatch, together):
    """turn.alone: after its turn ('g' on its FIFO) a worker learns from a second byte ('a') that
    the worker before it has exited; both bytes may come at once (the first worker, or the
    hand-off on exit)."""
    import os

    from fastprof.measure import turn

    prefix = tmp_path / "turn-0"
    os.mkfifo(f"{prefix}.go")
    held = os.open(f"{prefix}.go", os.O_RDWR)  # the parent's end, held open for the test
    monkeypatch.setenv(turn.TURN_ENV, str(prefix))
    monkeypatch.setenv(turn.PARENT_ENV, str(os.getpid()))
    for name, value in (("_asked", False), ("_alone", False), ("_fd", None), ("_released", False)):
        monkeypatch.setattr(turn, name, value)
    try:
        assert turn.alone(wait=False) is True  # no turn yet: nothing to wait for
        os.write(held, turn.TURN + (turn.ALONE if together else b""))
        assert turn.wait_turn() is not None and (tmp_path / "turn-0.ready").exists()
        if not together:
            assert turn.alone(wait=False) is False and turn.alone(wait=False) is False
            os.write(held, turn.ALONE)
        assert turn.alone(wait=False) is True and turn._fd is None
        assert turn.alone(wait=True) is True
    finally:
        os.close(held)
        if turn._fd is not None:
            os.close(turn._fd)


def test_the_hand_off_is_read_from_the_environment(monkeypatch):
    """FASTPROF_WORKER_HANDOFF: 'measured' unset, 'exit' as asked, a wrong value said and read
    as 'measured'."""
    from fastprof.measure.workers import HANDOFF_ENV, _handoff

    monkeypatch.delenv(HANDOFF_ENV, raising=False)
    assert _handoff() == ("measured", None)
    monkeypatch.setenv(HANDOFF_ENV, " Exit ")
    assert _handoff() == ("exit", None)
    monkeypatch.setenv(HANDOFF_ENV, "later")
    mode, note = _handoff()
    assert mode == "measured" and "'later' is not one of measured, exit" in note
