"""The engine benchmark end to end on the HF backend with a tiny model (a smoke run of the real
code path; the figures themselves are reported by `tsllm bench engine`, never asserted as times)."""

import json

from tsllm.cli import main


def test_engine_bench_writes_the_metrics(tmp_path, capsys):
    out = tmp_path / "engine.json"
    assert main(["bench", "engine", "--backend", "hf", "--roots", "2", "--simulations", "2",
                 "--width", "2", "--repeats", "1", "--parallel-simulations", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("tse", "prf", "vcn", "generated_tokens", "wall_seconds", "backend", "repeats"):
        assert key in result
    assert result["backend"] == "hf" and result["repeats"] == 1
    assert result["generated_tokens"] > 0 and result["tse"] > 0
    # the bridge scores each created node exactly once
    assert result["vcn"] == 1.0
    # HF keeps no cache across calls: every expansion recomputes its node's whole prompt, so prf > 1
    assert result["prf"] > 1.0
    assert "tse" in capsys.readouterr().out
