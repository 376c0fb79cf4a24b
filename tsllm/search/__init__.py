"""Every search algorithm as a function over an `Env` and a batched `PolicyValueFn`
(docs/ARCHITECTURE.md section 4). Pure Python + numpy: importing this package never imports torch.

All share one signature, `algo(env, pv, roots, *, <knobs>, budget=None) -> list[SearchOutput]`:
`budget` is a `tsllm.types.Budget` whose limits apply to each root separately (None: unlimited).
The two that draw random numbers, `mcts_alpha` (root noise, temperature) and `gumbel_mcts` (Gumbel
noise), also take `rng=` (a numpy Generator; None: a fixed seed); `takes_rng` says which do.
`ALGORITHMS` names them, the parallel-search rules as partial configurations (`parallel_rebase` is
`parallel_search` with `rule="rebase"`), so configs and the command line can pick an algorithm by
name; `best_of_n_checker` is `best_of_n` with `method="checker"`, the sampling baseline of a
search that sees terminal rewards.
"""

import inspect
from collections.abc import Callable
from functools import partial

from tsllm.search.aggregate import aggregate
from tsllm.search.best_first import best_first
from tsllm.search.bfs import bfs
from tsllm.search.dfs import dfs
from tsllm.search.gumbel import gumbel_mcts
from tsllm.search.mcts import mcts
from tsllm.search.mcts_alpha import mcts_alpha, mcts_rollout
from tsllm.search.parallel import RULES, parallel_search
from tsllm.search.sampling import best_of_n, cot_greedy, cot_sc

ALGORITHMS: dict[str, Callable] = {
    "cot_greedy": cot_greedy,
    "cot_sc": cot_sc,
    "best_of_n": best_of_n,
    "best_of_n_checker": partial(best_of_n, method="checker"),  # sampling + the env's checker (pass@n)
    "bfs": bfs,
    "dfs": dfs,
    "best_first": best_first,
    "mcts": mcts,
    "mcts_alpha": mcts_alpha,
    "mcts_rollout": mcts_rollout,
    "gumbel_mcts": gumbel_mcts,
    **{f"parallel_{rule}": partial(parallel_search, rule=rule) for rule in RULES},
}


def get_algorithm(name: str) -> Callable:
    """The search function called `name`, with a clear error listing the choices."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown search algorithm {name!r}; choose one of {sorted(ALGORITHMS)}") from None


def takes_rng(algorithm: Callable) -> bool:
    """Whether `algorithm` draws random numbers, i.e. accepts `rng=`."""
    return "rng" in inspect.signature(algorithm).parameters


__all__ = [
    "ALGORITHMS", "get_algorithm", "takes_rng", "aggregate", "best_first", "bfs", "dfs", "gumbel_mcts", "mcts",
    "mcts_alpha", "mcts_rollout", "parallel_search", "best_of_n", "cot_greedy", "cot_sc",
]
