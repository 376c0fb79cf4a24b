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


def test_engine_bench_runs_the_bpe_model_beside_the_char_model(tmp_path, capsys):
    """`--tokenizer char,bpe`: the same tiny model with each tokenizer, one run each in one
    process, printed side by side and written together."""
    out = tmp_path / "engine.json"
    assert main(["bench", "engine", "--backend", "hf", "--tokenizer", "char,bpe", "--roots", "2", "--simulations",
                 "2", "--width", "2", "--repeats", "1", "--parallel-simulations", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "hf" and list(result["tokenizers"]) == ["char", "bpe"]
    char, bpe = result["tokenizers"]["char"], result["tokenizers"]["bpe"]
    assert char["tokenizer"] == "char" and bpe["tokenizer"] == "bpe"
    assert char["vcn"] == bpe["vcn"] == 1.0 and bpe["generated_tokens"] > 0 and bpe["tse"] > 0
    # BPE merges learned from Game24's text: the same two questions take fewer tokens than characters
    assert bpe["root_prompt_tokens"] < char["root_prompt_tokens"]
    printed = capsys.readouterr().out
    side_by_side = printed[printed.index("tiny models by tokenizer"):]
    assert "char" in side_by_side and "bpe" in side_by_side and "vcn" in side_by_side and "tse" in side_by_side


def test_engine_bench_tokenizer_errors(capsys):
    import pytest

    for argv, message in [(["--tokenizer", "word"], "give one or more of char, bpe"),
                          (["--model", "m", "--value-model", "v", "--tokenizer", "bpe"], "--model brings its own")]:
        with pytest.raises(SystemExit):
            main(["bench", "engine", *argv])
        assert message in capsys.readouterr().err


def test_the_bench_bpe_model_writes_text_that_re_encodes_to_the_tokens_generated():
    """Random weights would sample lone bytes 0x80-0xFF, whose text (U+FFFD) re-encodes longer than
    what was generated; the benchmark's model never samples them, and nothing else is masked."""
    import torch

    from tsllm.bench import game24_texts, writes_whole_characters
    from tsllm.models.tiny import TinyModelConfig, build_tiny

    model, tokenizer = build_tiny(TinyModelConfig(tokenizer="bpe"), game24_texts())
    prompt = tokenizer(["Input: 4 4 6 8\n"] * 8, return_tensors="pt")["input_ids"]
    torch.manual_seed(0)
    before = model.generate(prompt, do_sample=True, top_k=0, max_new_tokens=48)[:, prompt.shape[1]:]
    bad = writes_whole_characters(model, tokenizer)
    assert len(bad) == 128 and all(tokenizer.decode([i]) == "\ufffd" for i in bad)
    assert sum(int(t) in bad for t in before.flatten()) > 20  # a quarter or more, before
    torch.manual_seed(0)
    after = model.generate(prompt, do_sample=True, top_k=0, max_new_tokens=48)[:, prompt.shape[1]:]
    assert not any(int(t) in bad for t in after.flatten())
    assert len(set(after.flatten().tolist())) > 50  # still random choices among the rest
    for row in after.tolist():
        text = tokenizer.decode(row)
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == row
    char_model, char_tokenizer = build_tiny(TinyModelConfig())
    assert writes_whole_characters(char_model, char_tokenizer) == []
