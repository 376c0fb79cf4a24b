"""Answer extraction reads model text, so its work must grow linearly with the text.

The quadratic cases were regex backtracking: `answer\\s+is\\s*:?\\s*<number>` on "answer is" and n
spaces with no number after them tries every split of the spaces between the two `\\s*` (8,000
spaces took 11 s). The fix makes every unbounded repeat possessive, so the engine never gives
characters back. The tests here hold that structurally (timing lives in scripts/bench_extract.py):

- every regex in tsllm/envs is a module-level compiled pattern (so the next check sees them all);
- none of them has an unbounded repeat that can backtrack (greedy or lazy `*`, `+`, `{n,}`);
- each rewritten pattern matches exactly what the pattern it replaced matched, on fuzzed text.

Why possessive repeats give linear scans here: a match attempt then backtracks only through the
pattern's own optional parts, a bounded number of times, so it costs O(characters read). The
patterns searched for (not anchored) either start with a literal word ("answer", "####") whose
following runs are disjoint, or (numbers, sentence ends) succeed once their first character
matches and resume after what they consumed; neither rereads a run from every start position.
"""

import ast
import re
import re._constants as sre_constants  # the stdlib's own regex parser, the one re.compile uses
import re._parser as sre_parse
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsllm.envs import base, game24, gsm8k, prontoqa, rlhf, toy

ENV_MODULES = (base, game24, gsm8k, prontoqa, rlhf, toy)
ENVS_DIR = Path(gsm8k.__file__).parent
REGEX_CALLS = {"match", "search", "findall", "finditer", "fullmatch", "split", "sub", "subn"}


def backtracking_repeats(pattern: str, flags: int = 0) -> list[str]:
    """The unbounded repeats of `pattern` that can give characters back (greedy or lazy), each as
    "<min>..<max>" with its position in a walk of the parse tree; possessive ones are fine."""
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, sre_parse.SubPattern):
            for op, av in node.data:
                if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT) and av[1] == sre_constants.MAXREPEAT:
                    found.append(f"{op} {av[0]}..inf")
                walk(av)
        elif isinstance(node, (tuple, list)):
            for item in node:
                walk(item)

    walk(sre_parse.parse(pattern, flags))
    return found


def module_patterns() -> dict[str, re.Pattern]:
    return {f"{m.__name__}.{name}": value for m in ENV_MODULES for name, value in vars(m).items()
            if isinstance(value, re.Pattern)}


def test_the_checker_flags_the_patterns_that_were_quadratic():
    assert backtracking_repeats(r"answer\s+is\s*:?\s*(true|false)\b") == [
        "MAX_REPEAT 1..inf", "MAX_REPEAT 0..inf", "MAX_REPEAT 0..inf"]
    assert backtracking_repeats(r"(?:x\d+?)*") == ["MAX_REPEAT 0..inf", "MIN_REPEAT 1..inf"]
    assert backtracking_repeats(r"answer\s++is\s*+:?\s*+(true|false)\b") == []
    assert backtracking_repeats(r"\d{1,3}(?:,\d{3})?") == []  # bounded repeats cannot run away


def test_every_env_regex_is_a_module_level_pattern():
    inline = []
    for path in sorted(ENVS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
                    and node.func.attr in REGEX_CALLS):
                inline.append(f"{path.name}:{node.lineno} re.{node.func.attr}")
    assert inline == [], "compile these at module level so the linear-time check covers them"


@pytest.mark.parametrize("name", sorted(module_patterns()))
def test_no_env_regex_can_backtrack_through_an_unbounded_repeat(name):
    pattern = module_patterns()[name]
    assert backtracking_repeats(pattern.pattern, pattern.flags) == []


# The patterns as they were before the rewrite (same flags as today's).
_OLD_NUMBER = r"(?:(?<![\w.)])[-+])?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?%?"
_OLD_NUM24 = r"-?\d{1,6}(?:/\d{1,6})?"
_OLD_CONCEPT = r"[\w-]+(?:\s+(?!and\b)[\w-]+){0,2}"
OLD_PATTERNS = {
    "tsllm.envs.gsm8k._NUMBER_RE": _OLD_NUMBER,
    "tsllm.envs.gsm8k._HASH_RE": r"####\s*(" + _OLD_NUMBER + ")",
    "tsllm.envs.gsm8k._ANSWER_IS_RE": r"answer\s+is\s*:?\s*(" + _OLD_NUMBER + ")",
    "tsllm.envs.gsm8k._FINAL_STEP_RE": r"answer\s+is|####",
    "tsllm.envs.gsm8k._CALCULATOR_RE": r"<<[^<>]*>>",
    "tsllm.envs.gsm8k._PLAIN_NUMBER_RE": r"[-+]?[0-9]+(?:\.[0-9]+)?",
    # widened since the rewrite (multi-word concepts, plural rules, numbers as entities): their
    # backtracking forms, so possessiveness is still what is checked
    "tsllm.envs.prontoqa._RULE_RE":
        rf"^(?:every|each)\s+({_OLD_CONCEPT})\s+is\s+(not\s+)?(?:(?:a|an)\s+)?({_OLD_CONCEPT})\s*\.?$",
    "tsllm.envs.prontoqa._PLURAL_RULE_RE":
        rf"^([A-Za-z][\w-]*(?:\s+(?!and\b)[\w-]+){{0,2}})\s+are\s+(not\s+)?({_OLD_CONCEPT})\s*\.?$",
    "tsllm.envs.prontoqa._FACT_RE":
        rf"^([A-Z0-9][\w-]*)\s+is\s+(not\s+)?(?:(?:a|an)\s+)?({_OLD_CONCEPT})\s*\.?$",
    "tsllm.envs.prontoqa._ANSWER_RE": r"answer\s+is\s*:?\s*(true|false)\b",
    "tsllm.envs.prontoqa._FINAL_STEP_RE": r"answer\s+is",
    "tsllm.envs.prontoqa._SENTENCE_END_RE": r"(?<=[.?!])\s+",
    "tsllm.envs.game24._STEP_RE":
        rf"^({_OLD_NUM24}) ([-+*/]) ({_OLD_NUM24}) = ({_OLD_NUM24}) \(left: ({_OLD_NUM24}(?: {_OLD_NUM24})*)\)$",
    "tsllm.envs.game24._ANSWER_RE": r"^answer\s*:\s*(.*)$",
}

# The vocabulary of every pattern above, so fuzzed text reaches their interesting paths.
PIECES = st.sampled_from([
    "answer", "Answer", "ANSWER", " is", "is", " ", "  ", "\t", "\n", "\r", "\u00a0", ":", "####", "#",
    "$", "-", "+", "%", ",", ".", "!", "?", "0", "7", "12", "123", "1,234", ",000", "١", "true", "false",
    "True", " a ", " an ", "not ", "Every ", "each ", "Alex", " are ", "Wumpuses", " and ", "wumpus", "x", "_",
    "(left: ", ")", "(", "/", " = ", " * ", "<<", ">>", "<", ">", "=",
])
FUZZ_TEXT = st.one_of(st.lists(PIECES, max_size=40).map("".join), st.text(max_size=80))


def test_every_old_form_names_a_pattern_in_use():  # so the comparison below compares something
    assert set(OLD_PATTERNS) <= set(module_patterns())


@settings(max_examples=400, deadline=None)
@given(FUZZ_TEXT)
def test_rewritten_patterns_match_exactly_what_the_old_ones_matched(text):
    patterns = module_patterns()
    for name, source in OLD_PATTERNS.items():
        pattern = patterns[name]
        old = re.compile(source, pattern.flags)
        for string in (text, text.strip()):  # anchored patterns see stripped lines in the envs
            assert [(m.span(), m.groups()) for m in pattern.finditer(string)] == \
                   [(m.span(), m.groups()) for m in old.finditer(string)], name
            assert pattern.split(string) == old.split(string), name
            for how in ("match", "fullmatch"):
                new_match, old_match = getattr(pattern, how)(string), getattr(old, how)(string)
                assert (new_match and new_match.groups()) == (old_match and old_match.groups()), (name, how)
