"""fastprof run --quantization and real prompts, end to end on the CPU: the axis with backends that run
on the CPU, a missing backend as a failed configuration, unknown names refused, prompts through a
tokenizer built here, tokenization inside or outside the timed region, reports and compare."""

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from fastprof import cli  # noqa: E402
from fastprof.capture import hf  # noqa: E402
from fastprof.capture import quantization as quant  # noqa: E402
from fastprof.results.sweep import load, validate  # noqa: E402

FAST = ["--max-new-tokens", "4", "--warmup", "1", "--iterations", "3", "--processes", "1", "-q", "--device", "cpu",
        "--sample-interval-ms", "0", "--kernel-trace", "0"]
WORDS = ("the quick brown fox jumps over lazy dog a model measures every token of decode on one clock "
         "small models are fast when the host keeps up").split()


@pytest.fixture(scope="module")
def model_dir(tiny_llama, tmp_path_factory):
    """The tiny Llama with a word-level tokenizer built here (nothing downloaded); ids stay below
    the model's vocabulary of 256."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-tok")
    tiny_llama.save_pretrained(d)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for w in dict.fromkeys(WORDS):
        vocab[w] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(d)
    return str(d)


def _has(backend):
    import importlib.util

    return importlib.util.find_spec(backend) is not None


@pytest.mark.skipif(not _has("torchao"), reason="torchao is not installed (pip install 'fastprof[quant]')")
def test_quantization_axis_end_to_end(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    out = tmp_path / "q.json"
    rc = cli.main(["run", "--model", model_dir, "--quantization", "none,torchao-int8wo", "--batch-size", "1,2",
                   "--prompt-len", "6", *FAST, "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    validate(json.loads(out.read_text()))
    sweep = load(out)
    assert sweep.parameters["quantization"] == ["none", "torchao-int8wo"]
    by = {(r.config["quantization"], r.config["batch_size"]): r.result for r in sweep.runs}
    assert set(by) == {("none", 1), ("none", 2), ("torchao-int8wo", 1), ("torchao-int8wo", 2)}
    q = by[("torchao-int8wo", 1)].quantization
    assert q["method"] == "torchao-int8wo" and q["backend"] == "torchao"
    import importlib.metadata

    assert q["backend_version"] == importlib.metadata.version("torchao")
    assert "Int8WeightOnlyConfig" in q["maps_to"]
    assert f"weights: {q['weight_bytes'] / 1e6:,.1f} MB, torchao-int8wo (torchao" in " ".join(
        str(by[("torchao-int8wo", 1)]).split())
    # int8 weights: the quantized layers take a quarter of their float32 bytes (plus scales), so the
    # whole model shrinks; counting the logical float32 size would leave it unchanged.
    none_bytes = by[("none", 1)].quantization["weight_bytes"]
    assert by[("none", 1)].quantization["method"] == "none"
    assert q["weight_bytes"] < 0.8 * none_bytes
    out_text = capsys.readouterr().out
    assert "quantization" in out_text and "torchao-int8wo" in out_text and "ITL vs none" in out_text.replace("\n", " ")
    # The HTML report draws throughput against batch size, one line per method.
    rc = cli.main(["report", str(out), "--html", str(tmp_path / "r.html")])
    assert rc == 0
    page = (tmp_path / "r.html").read_text()
    section = page[page.index("<h2>Quantization</h2>"):]
    assert "<img" in section.split("<h2>")[1] and "torchao-int8wo" in section


@pytest.mark.skipif(not _has("bitsandbytes"), reason="bitsandbytes is not installed (pip install 'fastprof[quant]')")
def test_bnb_4bit_on_the_cpu(model_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = cli.main(["run", "--model", model_dir, "--quantization", "bnb-nf4", "--prompt-len", "6", *FAST,
                   "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    result = load(out).runs[0].result
    assert result.config["quantization"] == "bnb-nf4" and result.quantization["backend"] == "bitsandbytes"
    assert result.summary["itl_s"]["n"] > 0


def test_missing_backend_fails_its_configurations_and_the_sweep_goes_on(model_dir, tmp_path, capsys, monkeypatch):
    real = quant.importlib.util.find_spec
    monkeypatch.setattr(quant.importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    out = tmp_path / "m.json"
    rc = cli.main(["run", "--model", model_dir, "--quantization", "bnb-int8,none", "--prompt-len", "6", *FAST,
                   "-o", str(out)])
    assert rc == 1
    sweep = load(out)
    failed = [r for r in sweep.runs if r.status != "ok"]
    assert [r.config["quantization"] for r in failed] == ["bnb-int8"]
    assert failed[0].error["type"] == "QuantizationUnavailable"
    assert "bitsandbytes" in failed[0].error["message"] and "fastprof[quant]" in failed[0].error["message"]
    assert [r.config["quantization"] for r in sweep.ok_runs] == ["none"]


def test_device_that_cannot_run_a_method_fails_it():
    with pytest.raises(quant.QuantizationUnavailable, match="CUDA GPUs only"):
        quant.transformers_config("torchao-int4wo", None, "cpu")


@pytest.mark.parametrize("argv, message", [
    (["run", "--quantization", "none,int3"], "--quantization: invalid choice: 'int3'"),
    (["run", "--quantization", "bnb-int8", "--tp"], "--quantization does not combine with --tp"),
])
def test_bad_quantization_is_exit_2(argv, message, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_unknown_method_lists_the_known_ones(capsys):
    assert cli.main(["run", "--quantization", "gptq"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in ("bnb-int8", "torchao-int8wo", "none"))


# ---- real prompts ---------------------------------------------------------------------------
def test_prompts_file_through_the_tokenizer(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("the quick brown fox\n\nsmall models are fast when the host keeps up\n")
    out = tmp_path / "p.json"
    rc = cli.main(["run", "--model", model_dir, "--prompts", str(prompts), "--batch-size", "3", *FAST,
                   "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    result = load(out).runs[0].result
    tok = hf.load_tokenizer(model_dir)
    lengths = [len(tok(t)["input_ids"]) for t in ("the quick brown fox", "small models are fast when the host keeps up")]
    # The batch takes the two prompts in turn (the third sequence is the first prompt again),
    # left-padded to the longest.
    assert result.inputs["prompt_tokens"] == [lengths[0], lengths[1], lengths[0]]
    assert result.config["prompt_len"] == max(lengths) and result.config["prompts"] == "file"
    assert result.inputs["source"] == "file" and result.inputs["prompts"] == 2
    assert result.inputs["tokenization_timed"] is False
    assert result.inputs["tokenize_s"] > 0 and result.inputs["detokenize_s"] > 0
    text = " ".join(str(result).split())
    assert "tokenization and detokenization outside the timed region" in text and "--time-tokenization" in text


def test_time_tokenization_puts_it_inside_the_timed_region(model_dir, tmp_path, capsys, monkeypatch):
    """A tokenizer made 80 ms slower shows in TTFT only when tokenization is timed."""
    import time

    real = hf.TextPrompts.encode

    def slow(self):
        time.sleep(0.08)
        return real(self)

    monkeypatch.setattr(hf.TextPrompts, "encode", slow)
    ttft = {}
    for flag in ([], ["--time-tokenization"]):
        out = tmp_path / f"t{len(flag)}.json"
        rc = cli.main(["run", "--model", model_dir, "--prompt", "the lazy dog", *flag, *FAST, "-o", str(out)])
        assert rc == 0, capsys.readouterr().err
        result = load(out).runs[0].result
        assert result.inputs["tokenization_timed"] is bool(flag)
        assert ("inside the timed region" in " ".join(str(result).split())) is bool(flag)
        ttft[bool(flag)] = result.summary["ttft_s"]["p50"]
    assert ttft[True] >= 0.08
    assert ttft[True] - ttft[False] >= 0.06, ttft


@pytest.mark.parametrize("argv, message", [
    (["run", "--prompt", "the fox"], "need a tokenizer"),
    (["run", "--prompt", "the fox", "--prompt-len", "8", "--model", "{model}"], "--prompt-len: does not apply"),
    (["run", "--prompts", "{missing}", "--model", "{model}"], "argument --prompts"),
    (["run", "--prompt", "   ", "--model", "{model}"], "the prompt is empty"),
    (["run", "--time-tokenization"], "--time-tokenization: needs --prompt"),
    (["run", "--prompt", "the fox", "--tokenizer", "{empty}", "--model", "{model}"], "cannot load a tokenizer"),
    (["run", "--prompt", "the fox", "--model", "{model}", "--serving", "--rate", "1"], "--prompt and --prompts do not"),
])
def test_bad_prompt_input_is_exit_2(argv, message, model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = [a.format(model=model_dir, missing=tmp_path / "nope.txt", empty=tmp_path / "empty") for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_tokenizer_of_another_model_is_refused(tiny_llama, tmp_path, capsys):
    """Token ids beyond the model's vocabulary are bad input, not a failed configuration."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    d = tmp_path / "m"
    tiny_llama.save_pretrained(d)
    vocab = {"<unk>": 0, "</s>": 1, **{f"w{i}": i + 2 for i in range(400)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>").save_pretrained(d)
    assert cli.main(["run", "--model", str(d), "--prompt", "w1 w399"]) == 2
    assert "beyond the model's vocabulary of 256" in capsys.readouterr().err


# ---- compare across methods -----------------------------------------------------------------
@pytest.mark.skipif(not _has("torchao"), reason="torchao is not installed (pip install 'fastprof[quant]')")
def test_compare_matches_configurations_that_differ_only_in_quantization(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    files = {}
    for method in ("none", "torchao-int8wo"):
        files[method] = tmp_path / f"{method}.json"
        assert cli.main(["run", "--model", model_dir, "--quantization", method, "--prompt-len", "6", *FAST,
                         "-o", str(files[method])]) == 0
    capsys.readouterr()
    assert cli.main(["compare", str(files["none"]), str(files["torchao-int8wo"])]) == 0  # one config each
    assert cli.main(["compare", str(files["none"]), str(files["torchao-int8wo"]), "--ignore", "quantization",
                     "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "baseline: none" in out and "other: torchao-int8wo (torchao" in out and "MB" in out
    about = json.loads((tmp_path / "c.json").read_text())["comparisons"][0]["about"]
    assert about[0].startswith("baseline: none") and about[1].startswith("other: torchao-int8wo")


def test_older_files_without_quantization_match_unquantized_ones(model_dir, tmp_path, capsys):
    new = tmp_path / "new.json"
    assert cli.main(["run", "--model", model_dir, "--prompt-len", "6", "--batch-size", "1,2", *FAST,
                     "-o", str(new)]) == 0
    doc = json.loads(new.read_text())
    for run in doc["runs"]:
        run["config"].pop("quantization")
        run["result"]["config"].pop("quantization")
        run["result"].pop("quantization", None)
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    capsys.readouterr()
    assert cli.main(["compare", str(old), str(new)]) == 0
    assert "only in" not in capsys.readouterr().out
