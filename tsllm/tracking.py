"""Experiment tracking for the iteration loop: W&B (online or offline), a local rounds.jsonl, plots.

    tracker = make_tracker("wandb", output_dir, project="tsllm", run_name="reach-tiny", config=cfg_dict)
    tracker.log({"greedy_accuracy": 0.31, "search_accuracy": 0.52, "tokens_per_question": 812}, step=k)
    tracker.log_series("value", {"loss": 0.41, "learning_rate": 5e-4}, step=120)  # a trainer's curve
    tracker.finish()
    rows = RoundsLog(output_dir / "rounds.jsonl").rows()
    plot_accuracy_per_round(rows, output_dir / "accuracy_per_round.png")

The loop calls one tracker object unconditionally (`NoOpTracker` when tracking is off), so no
`if wandb:` branches leak into it. Only the main process should build a tracker.

One W&B run per loop holds every curve. Per-round rows are plotted against `round`; each
training stage's curve (`warmstart`, `value`, `policy`: the trainers' loss, learning rate and
gradient norm, sent by `log_series`) against its own `<stage>/step` axis, counted on across
rounds (round k's value training continues round k-1's axis), with `<stage>/round` beside it.
Nothing is logged with W&B's own step, so the rounds and the stages never fight over it.

W&B mode "auto" goes online only when a login is present (WANDB_API_KEY, an identity token file,
or a netrc entry for the W&B host) and otherwise logs offline, saying so in one line: with no mode
and no key `wandb.init` fails, and the loop must not die over its dashboard. An online init that
fails (server unreachable, bad key) falls back to offline with one warning, after at most
`INIT_TIMEOUT_S` (15 s, not wandb's 90 s) plus wandb's own login lookup. The W&B run id is kept
in `<dir>/wandb_run_id.txt`, so a resumed loop continues the same W&B run.

rounds.jsonl holds one JSON object per round, keyed by "round". A line is written with a single
write + flush + fsync, so a kill can at worst leave a partial last line; reading skips that line
with a warning and the next write removes it. Logging a round that is already there replaces it:
a resumed run never duplicates rows. `rows()` returns rows sorted by round (a duplicate round in
the file: the later line wins).
"""

from __future__ import annotations

import dataclasses
import json
import math
import netrc
import os
import secrets
import string
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

from tsllm.atomic import write_text

WandbMode = Literal["auto", "online", "offline", "disabled"]
RUN_ID_FILE = "wandb_run_id.txt"
# wandb.init waits 90 s by default before giving up on an unreachable server; the loop falls
# back to offline logging then, so a long wait only delays the run. A reachable server answers
# in a few seconds. Pass settings={"init_timeout": ...} to wait longer on a slow link; wandb's
# lookup for its "logged in as" line retries for ~10 s more unless settings={"quiet": True}.
INIT_TIMEOUT_S = 15.0


class TrackingFallbackWarning(RuntimeWarning):
    """W&B could not start online; the run logs offline instead."""


@runtime_checkable
class Tracker(Protocol):
    def log(self, row: dict[str, Any], step: int) -> None: ...
    def summary(self, values: dict[str, Any]) -> None: ...
    def finish(self) -> None: ...


def log_series(tracker: Any, name: str, values: dict[str, Any], step: int) -> None:
    """`tracker.log_series(...)` where the tracker has it (a Tracker needs only log, summary, finish)."""
    method = getattr(tracker, "log_series", None)
    if method is not None:
        method(name, values, step)


class NoOpTracker:
    """Tracking switched off: every call does nothing (and wandb is never imported)."""

    def log(self, row: dict[str, Any], step: int) -> None:
        pass

    def log_series(self, name: str, values: dict[str, Any], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class MultiTracker:
    """Fans every call out to several trackers, in the order given."""

    def __init__(self, trackers: Iterable[Tracker]):
        self.trackers = list(trackers)

    def log(self, row: dict[str, Any], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(row, step)

    def log_series(self, name: str, values: dict[str, Any], step: int) -> None:
        for tracker in self.trackers:
            log_series(tracker, name, values, step)

    def summary(self, values: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.summary(values)

    def finish(self) -> None:
        """Finishes every tracker even if one fails, then re-raises the first failure."""
        errors = []
        for tracker in self.trackers:
            try:
                tracker.finish()
            except Exception as error:  # noqa: BLE001 - re-raised below
                errors.append(error)
        if errors:
            raise errors[0]


# --------------------------------------------------------------------------------------------- W&B


def wandb_login_present(base_url: str | None = None) -> bool:
    """Whether wandb would find credentials, judged locally (no network call).

    Checks WANDB_API_KEY / WANDB_IDENTITY_TOKEN_FILE, then the netrc entry for the W&B host
    (through wandb's own netrc reader when this wandb version has it).
    """
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    import wandb

    host = base_url or os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
    try:
        from wandb.sdk.lib.wbauth import read_netrc_auth
    except ImportError:  # older wandb: read the same file ourselves
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        try:
            return netrc.netrc(path).authenticators(urlsplit(host).netloc) is not None
        except (OSError, netrc.NetrcParseError):
            return False
    try:
        return bool(read_netrc_auth(host=host))
    except Exception:  # noqa: BLE001 - a malformed key is still a login attempt; online init will say why
        return True


def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))




class WandbTracker:
    """A W&B run under `<dir>/wandb/`. `mode` is the mode asked for; `self.mode` the one in use.

    `settings` are extra `wandb.Settings` fields (e.g. {"init_timeout": 30}; the default
    init_timeout is INIT_TIMEOUT_S, not wandb's 90 s). The run id comes
    from `resume_id`, else from `<dir>/wandb_run_id.txt`, else is new; it is saved before init,
    so a run killed at any point resumes under the same id.
    """

    def __init__(
        self,
        project: str,
        run_name: str | None = None,
        config: dict[str, Any] | Any = None,
        dir: str | os.PathLike = ".",
        mode: WandbMode = "auto",
        resume_id: str | None = None,
        settings: dict[str, Any] | None = None,
    ):
        if mode not in ("auto", "online", "offline", "disabled"):
            raise ValueError(f"W&B mode must be auto, online, offline or disabled, got {mode!r}")
        self.dir = Path(dir)
        self.run = None
        self.run_id: str | None = None
        self.mode = mode
        self._axes: dict[str, str] = {}  # metric -> the step metric it is plotted against
        self._series: dict[str, tuple[int, int]] = {}  # stage -> (steps of its earlier trainings, last step)
        if mode == "disabled":
            return  # no wandb import, no files
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            config = dataclasses.asdict(config)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run_id = resume_id or self._saved_run_id() or _new_run_id()
        write_text(self.dir / RUN_ID_FILE, self.run_id + "\n")
        # quiet: no per-metric run history and summary at finish (a line per metric in a CI log);
        # the loop prints its own table, and the offline run's `wandb sync` line below
        settings = {"init_timeout": INIT_TIMEOUT_S, "quiet": True, **(settings or {})}
        self.mode = self._resolve_mode(mode, settings.get("base_url"))
        init_args = dict(project=project, name=run_name, config=dict(config or {}), dir=str(self.dir),
                         id=self.run_id, resume="allow")
        self.run = self._init(init_args, settings)

    def _saved_run_id(self) -> str | None:
        path = self.dir / RUN_ID_FILE
        return (path.read_text().strip() or None) if path.exists() else None

    def _resolve_mode(self, mode: str, base_url: str | None) -> str:
        if mode != "auto":
            return mode
        from_env = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
                    "disabled": "disabled"}.get(os.environ.get("WANDB_MODE", "").lower())
        if from_env:
            return from_env  # the user chose in the environment; nothing to announce
        if wandb_login_present(base_url):
            return "online"
        print(f"tsllm: no W&B login found (WANDB_API_KEY or netrc): logging offline under "
              f"{self.dir / 'wandb'}; the run ends printing its `wandb sync` line", file=sys.stderr, flush=True)
        return "offline"

    def _init(self, init_args: dict[str, Any], settings: dict[str, Any]):
        import wandb

        if self.mode != "online":
            return wandb.init(mode=self.mode, settings=wandb.Settings(**settings), **init_args)
        try:
            return wandb.init(mode="online", settings=wandb.Settings(**settings), **init_args)
        except Exception as error:  # noqa: BLE001 - any online failure: keep the loop running offline
            first_line = (str(error).splitlines() or [""])[0]
            warnings.warn(f"W&B online init failed ({type(error).__name__}: {first_line}); logging offline "
                          f"under {self.dir / 'wandb'} instead, upload later with `wandb sync`",
                          TrackingFallbackWarning, stacklevel=3)
            # The failed init leaves its run id registered in wandb's service process ("run ID
            # is in use"); tearing the service down frees it for the offline run.
            wandb.teardown()
            self.mode = "offline"
            offline = {k: v for k, v in settings.items() if k not in ("base_url", "api_key")}
            return wandb.init(mode="offline", settings=wandb.Settings(**offline), **init_args)

    def _plot_against(self, keys: Iterable[str], axis: str) -> None:
        """Declare `axis` and plot each of `keys` against it (once per key)."""
        for key in [axis, *keys]:
            if key not in self._axes:
                self._axes[key] = axis
                if key == axis:
                    self.run.define_metric(axis)
                else:
                    self.run.define_metric(key, step_metric=axis)

    def log(self, row: dict[str, Any], step: int) -> None:
        """One round's row, plotted against `round` (= step)."""
        if self.run is not None:
            row = {**row, "round": step}
            self._plot_against([k for k in row if k != "round"], "round")
            self.run.log(row)

    def log_series(self, name: str, values: dict[str, Any], step: int) -> None:
        """A point of stage `name`'s curve at the trainer's optimizer `step`: keys `<name>/<key>`
        against `<name>/step`, which a new training of the stage (its step starting again)
        continues rather than restarts."""
        if self.run is None:
            return
        done, last = self._series.get(name, (0, -1))
        if step < last:  # the next round's training of this stage
            done += last
        self._series[name] = (done, step)
        row = {f"{name}/{key}": value for key, value in values.items()}
        axis = f"{name}/step"
        self._plot_against(row, axis)
        self.run.log({**row, axis: done + step})

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(dict(values))

    def finish(self) -> None:
        if self.run is not None:
            run, self.run = self.run, None  # a second finish() is a no-op
            run.finish()
            if self.mode == "offline":  # where the run is, and the one command that uploads it
                print(f"tsllm: W&B run logged offline; upload it with: wandb sync {Path(run.dir).parent}",
                      file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------- rounds.jsonl


def _json_value(value: Any) -> Any:
    """numpy scalars and arrays (or anything with .tolist()/.item()) as plain JSON values."""
    for method in ("tolist", "item"):  # tolist first: arrays have .item() too, but only for size 1
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise TypeError(f"cannot write {type(value).__name__} to rounds.jsonl: {value!r}")


class RoundsLog:
    """One JSON line per round in `path` (usually `<output_dir>/rounds.jsonl`); also a Tracker."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _read(self) -> tuple[list[dict[str, Any]], bool]:
        """(rows in file order, whether the file needs a rewrite because of its last line)."""
        if not self.path.exists():
            return [], False
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        lines = text.split("\n")
        complete, tail = lines[:-1], lines[-1]  # `tail` is "" when the file ends with a newline
        rows = []
        for number, line in enumerate(complete, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}:{number}: not a JSON object ({error.msg}); fix or remove "
                                 f"that line") from None
            if not isinstance(row, dict) or not isinstance(row.get("round"), int):
                raise ValueError(f"{self.path}:{number}: expected an object with an integer 'round'")
            rows.append(row)
        if not tail.strip():
            return rows, False
        try:  # a line cut before its newline can still be whole
            row = json.loads(tail)
            if isinstance(row, dict) and isinstance(row.get("round"), int):
                return rows + [row], True
        except json.JSONDecodeError:
            pass
        warnings.warn(f"{self.path}:{len(complete) + 1}: ignoring a partial last line ({len(tail)} chars; the run "
                      f"was probably killed while writing it); the next write removes it", stacklevel=3)
        return rows, True

    def rows(self) -> list[dict[str, Any]]:
        """The logged rows sorted by round; for a round written twice, the later line wins."""
        by_round = {row["round"]: row for row in self._read()[0]}
        return [by_round[k] for k in sorted(by_round)]

    def log(self, row: dict[str, Any], step: int) -> None:
        if "round" in row and row["round"] != step:
            raise ValueError(f"row has round={row['round']!r} but is logged at step {step}")
        row = {"round": step, **{k: v for k, v in row.items() if k != "round"}}
        line = json.dumps(row, default=_json_value) + "\n"
        existing, needs_rewrite = self._read()
        if needs_rewrite or any(old["round"] == step for old in existing):
            kept = [old for old in existing if old["round"] != step]
            self._rewrite(sorted(kept + [row], key=lambda r: r["round"]))
        else:
            self._append(line.encode("utf-8"))

    def _append(self, data: bytes) -> None:
        """One write of the whole line, then fsync: a kill leaves at most a partial last line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)
            while written < len(data):  # short writes are rare on regular files but allowed
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, "".join(json.dumps(r, default=_json_value) + "\n" for r in rows))

    def summary(self, values: dict[str, Any]) -> None:
        pass  # the file holds per-round rows only; run summaries live in W&B

    def log_series(self, name: str, values: dict[str, Any], step: int) -> None:
        pass  # trainers' curves: each stage's metrics.json holds them; W&B plots them

    def finish(self) -> None:
        pass  # every log() is already on disk


def make_tracker(
    kind: Literal["wandb", "none"],
    output_dir: str | os.PathLike | None = None,
    *,
    project: str = "tsllm",
    run_name: str | None = None,
    config: dict[str, Any] | Any = None,
    mode: WandbMode = "auto",
    resume_id: str | None = None,
    settings: dict[str, Any] | None = None,
) -> Tracker:
    """The loop's one tracker: `<output_dir>/rounds.jsonl` (when output_dir is given) plus W&B
    (kind "wandb", files under `<output_dir>/wandb/`). Nothing to track gives a NoOpTracker."""
    if kind not in ("wandb", "none"):
        raise ValueError(f"tracker kind must be 'wandb' or 'none', got {kind!r}")
    trackers: list[Tracker] = []
    if output_dir is not None:
        trackers.append(RoundsLog(Path(output_dir) / "rounds.jsonl"))
    if kind == "wandb":
        trackers.append(WandbTracker(project, run_name, config, dir=output_dir or ".", mode=mode,
                                     resume_id=resume_id, settings=settings))
    if not trackers:
        return NoOpTracker()
    return trackers[0] if len(trackers) == 1 else MultiTracker(trackers)


# ------------------------------------------------------------------------------------------- plots


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _methods(rows: list[dict[str, Any]]) -> list[str]:
    """Method names from `<method>_accuracy` keys, alphabetical (a stable colour per method)."""
    suffix = "_accuracy"
    return sorted({k[: -len(suffix)] for row in rows for k, v in row.items()
                   if k.endswith(suffix) and len(k) > len(suffix) and _number(v)})


def _tokens_key(method: str, row: dict[str, Any]) -> str:
    key = f"{method}_tokens_per_question"
    return "tokens_per_question" if method == "search" and key not in row else key


def _new_axes(title: str, xlabel: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching pyplot's global backend
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _finish_plot(figure, axes, ys: list[float], path: str | os.PathLike, empty_note: str) -> Path:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="best")
    else:
        axes.text(0.5, 0.5, empty_note, ha="center", va="center", transform=axes.transAxes)
    if ys and all(0.0 <= y <= 1.0 for y in ys):
        axes.set_ylim(-0.03, 1.03)  # accuracies as fractions: show the whole scale
    return save_figure(figure, path)


def save_figure(figure, path: str | os.PathLike) -> Path:
    """Lay the figure out and write it as a PNG atomically."""
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    figure.savefig(tmp, format="png")
    os.replace(tmp, path)  # readers never see a half-written PNG
    return path


def plot_accuracy_per_round(rows: list[dict[str, Any]], path: str | os.PathLike,
                            labels: dict[str, str] | None = None) -> Path:
    """One line per `<method>_accuracy` key, x = round, named by `labels[method]` (e.g. "search"
    -> "mcts_alpha") or the key's method. Writes a PNG atomically; returns its path."""
    from matplotlib.ticker import MaxNLocator

    figure, axes = _new_axes("Accuracy per round", "round", "accuracy")
    rounds = sorted({r["round"] for r in rows if isinstance(r.get("round"), int)})
    if 0 < len(rounds) <= 20:  # one tick per round; a lone round gets room on both sides
        axes.set_xticks(rounds)
        axes.set_xlim(rounds[0] - 0.5, rounds[-1] + 0.5)
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    all_ys = []
    for method in _methods(rows):
        points = sorted((r["round"], r[f"{method}_accuracy"]) for r in rows if _number(r.get(f"{method}_accuracy")))
        xs, ys = zip(*points)
        axes.plot(xs, ys, marker="o", label=(labels or {}).get(method, method))
        all_ys += ys
    return _finish_plot(figure, axes, all_ys, path, "no <method>_accuracy values logged yet")


def plot_accuracy_vs_tokens(rows: list[dict[str, Any]], path: str | os.PathLike,
                            labels: dict[str, str] | None = None) -> Path:
    """Accuracy vs generated tokens per question, one line per method (named as in
    plot_accuracy_per_round; rounds in order), each point labelled with its round. Methods without
    a tokens key are left out. Log x when the token counts span 10x or more (greedy and search
    differ by orders of magnitude)."""
    figure, axes = _new_axes("Accuracy vs tokens per question", "generated tokens per question", "accuracy")
    all_xs, all_ys = [], []
    for method in _methods(rows):
        points = sorted((r["round"], r[_tokens_key(method, r)], r[f"{method}_accuracy"]) for r in rows
                        if _number(r.get(f"{method}_accuracy")) and _number(r.get(_tokens_key(method, r))))
        if not points:
            continue
        rounds, xs, ys = zip(*points)
        axes.plot(xs, ys, marker="o", label=(labels or {}).get(method, method))
        for k, x, y in points:
            axes.annotate(f"r{k}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        all_xs += xs
        all_ys += ys
    if all_xs and min(all_xs) > 0 and max(all_xs) >= 10 * min(all_xs):
        axes.set_xscale("log")
    return _finish_plot(figure, axes, all_ys, path, "no accuracy with tokens-per-question logged yet")


def plot_mean_per_round(summary: list[dict[str, Any]], metric: str, path: str | os.PathLike,
                        title: str = "Mean per round") -> Path:
    """One line per `arm` of `summary` rows ({round, arm, <metric>_mean, <metric>_std}, e.g.
    tsllm bench loop's), x = round, with a band of ± one std (seeds). Writes a PNG atomically."""
    figure, axes = _new_axes(title, "round", metric.replace("_", " "))
    rounds = sorted({r["round"] for r in summary})
    if rounds:
        axes.set_xticks(rounds)
        axes.set_xlim(rounds[0] - 0.5, rounds[-1] + 0.5)
    all_ys = []
    for arm in dict.fromkeys(r["arm"] for r in summary):
        points = sorted((r["round"], r[f"{metric}_mean"], r[f"{metric}_std"]) for r in summary if r["arm"] == arm)
        xs, means, stds = zip(*points)
        line, = axes.plot(xs, means, marker="o", label=arm)
        axes.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                          color=line.get_color(), alpha=0.2)
        all_ys += means
    return _finish_plot(figure, axes, all_ys, path, f"no {metric} values yet")
