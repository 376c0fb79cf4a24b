"""`tsllm bench loop`'s arms and seeds without running a loop: argument parsing, where each arm's run
lives and what it overrides, and the mean ± std over seeds from small fake round records."""

import pytest

from tsllm import bench_loop
from tsllm.cli import main
from tsllm.config import ConfigError


def test_arms_parse_with_the_old_name_of_paths_and_refuse_unknowns_and_repeats():
    assert bench_loop.parse_arms("search,sampling") == ["search", "sampling"]
    assert bench_loop.parse_arms(" visits , advantages,paths ") == ["visits", "advantages", "paths"]
    with pytest.raises(ConfigError, match="--arms: winners; choose from paths, advantages, visits, preferences, "
                                          "sampling"):
        bench_loop.parse_arms("paths,winners")
    with pytest.raises(ConfigError, match="names an arm twice"):
        bench_loop.parse_arms("search,paths")  # one arm under two names
    with pytest.raises(ConfigError, match="none given"):
        bench_loop.parse_arms(",")


def test_each_arm_is_a_loop_config_in_its_own_folder(tmp_path):
    assert bench_loop.arm_overrides("sampling") == ["improve=sampling"]
    assert bench_loop.arm_overrides("search") == ["improve=search", "policy.target=paths"]
    config = bench_loop.load_arm(None, ["task=reach"], tmp_path, "visits", seed=2)
    assert (config.improve, config.policy.target, config.seed) == ("search", "visits", 2)
    assert config.output_dir == str(tmp_path / "seed_2" / "visits")
    assert bench_loop.load_arm(None, ["task=reach", "seed=7"], tmp_path, "sampling", None).output_dir == \
        str(tmp_path / "sampling")  # no --seeds: the old layout, the config's seed


def rounds(*greedy):
    return [{"round": k, "greedy_accuracy": g, "search_accuracy": g + 0.1} for k, g in enumerate(greedy)]


def test_summary_is_mean_and_sample_std_over_the_seeds_that_reached_each_round():
    seed_runs = {"0": {"paths": rounds(0.1, 0.3), "sampling": rounds(0.2, 0.2)},
                 "1": {"paths": rounds(0.3, 0.5), "sampling": rounds(0.2)}}  # seed 1's sampling stopped early
    summary = bench_loop.summary_rows(seed_runs)
    assert [(r["round"], r["arm"], r["seeds"]) for r in summary] == \
        [(0, "paths", 2), (0, "sampling", 2), (1, "paths", 2), (1, "sampling", 1)]
    first = summary[0]
    assert first["greedy_accuracy_mean"] == pytest.approx(0.2)
    assert first["greedy_accuracy_std"] == pytest.approx(0.1414214, abs=1e-6)  # sqrt(((0.1)^2 + (0.1)^2) / 1)
    assert first["search_accuracy_mean"] == pytest.approx(0.3)
    assert summary[1]["greedy_accuracy_std"] == 0.0 and summary[3]["greedy_accuracy_std"] == 0.0


def test_the_table_prints_mean_and_std_for_several_seeds_and_the_plot_is_written(tmp_path, capsys):
    seed_runs = {"0": {"paths": rounds(0.1, 0.3), "sampling": rounds(0.2, 0.25)},
                 "1": {"paths": rounds(0.3, 0.5), "sampling": rounds(0.2, 0.35)}}
    result = {"config": {"search": {"algorithm": "dfs"}}, "seed_runs": seed_runs, "runs": seed_runs["0"],
              "table": bench_loop.table_rows(seed_runs["0"]), "summary": bench_loop.summary_rows(seed_runs)}
    bench_loop.print_loop_table(result)
    printed = capsys.readouterr().out
    assert "last round greedy: paths loop 30.0%, sampling loop 25.0%" in printed
    assert "mean ± std over 2 seeds" in printed and "    1  paths       40.0% ± 14.1%  (2 seeds)" in printed
    png = bench_loop.write_plot(result, tmp_path / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("flags, message", [(["--arms", "paths,bogus"], "--arms: bogus"),
                                            (["--seeds", "0"], "--seeds: must be >= 1"),
                                            (["--first-seed", "3"], "--first-seed: needs --seeds"),
                                            (["--seeds", "2", "--first-seed", "-1"], "--first-seed: needs --seeds")])
def test_bad_arms_or_seeds_stop_before_any_work(tmp_path, capsys, flags, message):
    assert main(["bench", "loop", "--output-dir", str(tmp_path / "b"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_tree_target_with_sampling_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="config key 'policy.target'"):
        bench_loop.load_arm(None, ["policy.target=visits"], tmp_path, "sampling", None)


def test_round_0s_search_is_shared_only_with_arms_that_can_read_it(tmp_path):
    def arm(name):
        return bench_loop.load_arm(None, ["task=reach"], tmp_path, name, seed=0)

    base = ["warmstart", "round_0/sample", "round_0/value", "round_0/eval"]
    assert bench_loop.shared_stages(arm("advantages"), arm("paths")) == [*base, "round_0/search"]
    assert bench_loop.shared_stages(arm("advantages"), arm("visits")) == [*base, "round_0/search"]
    assert bench_loop.shared_stages(arm("advantages"), arm("sampling")) == [*base, "round_0/search"]
    assert bench_loop.shared_stages(arm("paths"), arm("sampling")) == [*base, "round_0/search"]
    assert bench_loop.shared_stages(arm("paths"), arm("advantages")) == base  # paths keeps no trees
    assert bench_loop.shared_stages(arm("sampling"), arm("paths")) == base  # an RFT first arm ran no search


def test_sharing_copies_only_completed_stages_the_target_lacks_and_points_them_at_the_copy(tmp_path):
    source, target = tmp_path / "seed_0" / "paths", tmp_path / "seed_0" / "sampling"
    for stage in ("warmstart", "round_0/search", "round_0/value"):
        (source / stage).mkdir(parents=True)
    (source / "warmstart" / "done.json").write_text(f'{{"policy": "{source}/warmstart/model"}}')
    (source / "round_0" / "search" / "done.json").write_text('{"compute_per_question": 12.5}')
    (target / "round_0" / "search").mkdir(parents=True)  # already there: kept as it is
    copied = bench_loop.share_warm_start(source, target, ["warmstart", "round_0/value", "round_0/search"])
    assert copied == ["warmstart"]  # round_0/value never completed in the source
    assert (target / "warmstart" / "done.json").read_text() == f'{{"policy": "{target}/warmstart/model"}}'
    assert not (target / "round_0" / "value").exists() and not (target / "round_0" / "search" / "done.json").exists()


def test_first_seed_runs_the_seeds_after_it_each_in_its_own_folder(tmp_path, monkeypatch):
    import tsllm.loop
    ran = []
    monkeypatch.setattr(tsllm.loop.Loop, "run", lambda self: ran.append((self.config.seed, self.config.output_dir))
                        or [{"round": 0, "greedy_accuracy": 0.5, "search_accuracy": 0.6}])
    result = bench_loop.run_loop_bench(None, ["task=reach", "tracking.report_to=none"], tmp_path, progress=False,
                                       arms=["paths"], seeds=2, first_seed=3)
    assert ran == [(3, str(tmp_path / "seed_3" / "paths")), (4, str(tmp_path / "seed_4" / "paths"))]
    assert list(result["seed_runs"]) == ["3", "4"] and result["first_seed"] == 3
