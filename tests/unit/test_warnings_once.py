"""Each distinct warning is said once, with the metrics and configurations it applies to."""

from fastprof.results.warnings import grouped

CV = ("{m}: coefficient of variation {v}% exceeds 10%; the machine or the workload is noisy, so compare medians "
      "and confidence intervals, not means")


def test_one_sentence_for_every_metric_and_configuration():
    items = [("bs=1", CV.format(m="ttft_s", v="13.9")), ("bs=1", CV.format(m="itl_s", v="16.3")),
             ("bs=2", CV.format(m="itl_s", v="30.5")), ("bs=4", CV.format(m="itl_s", v="11.0")),
             ("bs=1", "only 3 measured iteration(s): raise the count"),
             ("bs=2", "only 3 measured iteration(s): raise the count")]
    out = grouped(items)
    assert len(out) == 2
    assert out[0].startswith("coefficient of variation 11.0 to 30.5% exceeds 10%")
    assert out[0].endswith("(ttft_s, itl_s in bs=1; itl_s in bs=2; itl_s in bs=4)")
    assert out[1] == "only 3 measured iteration(s): raise the count (bs=1, bs=2)"


def test_same_metrics_everywhere_are_named_once_and_other_numbers_keep_groups_apart():
    out = grouped([("a", CV.format(m="itl_s", v="12")), ("b", CV.format(m="itl_s", v="12")),
                   ("a", "latencies are rank 0's"), ("b", "latencies are rank 1's")])
    assert out[0].startswith("coefficient of variation 12% exceeds") and out[0].endswith("(itl_s in a, b)")
    assert out[1:] == ["latencies are rank 0's (a)", "latencies are rank 1's (b)"]


def test_a_single_result_lists_its_metrics():
    assert grouped([(None, CV.format(m="ttft_s", v="11")), (None, CV.format(m="tpot_s", v="20"))]) == [
        CV.format(m="", v="11 to 20")[2:] + " (ttft_s, tpot_s)"]
