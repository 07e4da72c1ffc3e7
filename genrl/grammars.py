"""Answer grammars: what an answer to each task may look like before any verifier sees it.

Every answer a verifier scores came from a model or a peer: it is hostile text. Some of
reasoning-gym's scorers hand the answer string to an interpreter, so an answer such as
``__import__('os').system(...)`` would run as code in whatever process scores it. The
grammar is the first of two defences (the second: verifiers run in a sandboxed process
pool, genrl/sandbox.py): an answer that does not fit its task's grammar scores 0 without
reaching the verifier. Each check is linear in the answer's length (no regular expression
here can backtrack), and no grammar admits a letter sequence that could name a Python
object where a scorer evaluates.

The audit (reasoning-gym 0.1.25, every one of its 106 tasks' ``score_answer`` and the
helpers it calls; ``tests/test_grammars.py`` re-checks that every task whose scorer's module
calls an interpreter has a grammar of its own here):

==========================  ===============================  =========================================
task                        what its scorer does             grammar: what an answer may be
==========================  ===============================  =========================================
binary_matrix               ``eval(answer)`` (list branch)   GRID: rows of integers, or [[...]] of ints
spiral_matrix               ``eval(answer)`` (list branch)   ROW: integers on one line, or [...] of ints
string_insertion            ``eval(answer)`` (list branch)   LETTERS: one word of letters
n_queens                    ``eval(answer)`` (list branch)   BOARD: rows of ``Q`` and ``_``
polynomial_multiplication   sympy ``parse_expr``             POLYNOMIAL: numbers, one-letter variables,
                                                             + - * ( ), ``**``/``^`` after a variable
                                                             with an exponent of at most 3 digits
puzzle24, countdown         sympy ``parse_expr``             ARITHMETIC: integers, + - * / ( ), no ``**``
simple_integration,         sympy ``parse_expr`` and         SYMBOLIC: POLYNOMIAL's pieces plus
intermediate_integration    ``simplify``                     sin cos tan exp log sqrt asin acos
                                                             atan, ``/``, C
number_sorting              ``json.loads`` (``eval`` only    NUMBER_LIST: [ ] of quoted or bare numbers
                            of its own answer)
bitwise_arithmetic          ``eval`` of its own question,    INT_LITERAL: one integer, decimal or
                            ``int(answer, 0)``               0x / 0b / 0o
propositional_logic         a recursive-descent parser       FORMULA: capital letters, ∧ ∨ ¬ → ↔ ( ),
                            of its own (depth = nesting)     nesting at most 16 deep
boxnet,                     ``json.loads``                   JSON: bracket nesting at most 16 deep
game_of_life, graph_color,
group_anagrams, jugs,
knight_swap,
palindrome_partitioning
codeio                      ``exec`` runs the task's own     JSON (the answer is only compared)
                            code to make questions
every other task            string or number comparison      TEXT: at most 64 lines, no control chars
==========================  ===============================  =========================================

The paper's nine tasks and chain_sum have grammars that say what their answers are (so a
list of candidates, an expression or a sentence is refused for a one-value task):
base_conversion DIGITS, basic_arithmetic / chain_sum / decimal_arithmetic NUMBER, arc_1d ROW,
bf WORD, fraction_simplification FRACTION, calendar_arithmetic WORD_OR_INTEGER,
propositional_logic FORMULA, binary_matrix GRID. Every gold answer of these tasks, at every
curriculum level, fits its grammar (tests/test_grammars.py).

A grammar for a one-value task refuses lists of candidates ("Friday or Monday"), expressions
("5 - 3") and sentences outright. ``row``: for grid answers, what one line looks like (a tagless
answer is then the trailing block of such lines); ``free``: free text, where a tagless answer
must be a bare value of a few words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Optional

MAX_DEPTH = 16          # bracket nesting any grammar allows
MAX_LINES = 64


@dataclass(frozen=True)
class Grammar:
    name: str
    allows: str                          # one line: what an answer may be
    accepts: Callable[[str], bool]
    row: Optional[Callable[[str], bool]] = None   # grids: what one of their lines looks like
    free: bool = False                   # free text: a tagless answer must be a bare value


def _full(pattern: str, flags: int = 0) -> Callable[[str], bool]:
    """A fullmatch by a pattern without nested or overlapping repetition (linear time)."""
    compiled = re.compile(pattern, flags)
    return lambda text: compiled.fullmatch(text) is not None


def _depth_ok(text: str, opens: str = "([{", closes: str = ")]}", limit: int = MAX_DEPTH) -> bool:
    depth = 0
    for ch in text:
        if ch in opens:
            depth += 1
            if depth > limit:
                return False
        elif ch in closes:
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _charset(allowed: str) -> Callable[[str], bool]:
    chars = frozenset(allowed)
    return lambda text: all(ch in chars for ch in text)


_INT = r"[-+]?\d{1,400}"
_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3}){1,130}|\d{1,400})(?:\.\d{0,400})?(?:[eE][-+]?\d{1,3})?|[-+]?\.\d{1,400}"
_number = _full(_NUM)
_row = _full(r"-?\d{1,6}(?: {1,4}-?\d{1,6}){0,9999}")
_board_row = _full(r"[Q_](?: [Q_]){0,63}")
_int_list = _full(r"\[ ?(?:-?\d{1,6}(?:, ?-?\d{1,6}){0,9999})? ?\]")
_digits_ok = _charset("0123456789 ,-[]\n")


def _grid(text: str) -> bool:
    """Rows of integers (one per line), or a list of lists of integers."""
    if len(text) > 20_000:
        return False
    if text.startswith("["):
        return _digits_ok(text) and _depth_ok(text, "[", "]", 2)
    rows = text.split("\n")
    return len(rows) <= 100 and all(_row(row.strip()) for row in rows)


def _board(text: str) -> bool:
    rows = text.split("\n")
    return (len(rows) <= 64 and len(text) <= 10_000
            and all(_board_row(row.strip()) for row in rows))


# --- expressions that sympy parses: tokens, then rules between them ----------------------

_EXPR_TOKEN = re.compile(r"\s*(\d{1,400}(?:\.\d{1,400})?|[A-Za-z]{1,4}|\*\*|[-+*/^()])")
_FUNCTIONS = frozenset({"sin", "cos", "tan", "exp", "log", "sqrt", "asin", "acos", "atan"})


def _expression(text: str, functions: frozenset, division: bool, powers: bool,
                max_len: int = 32_000) -> bool:
    """Numbers, one-letter variables, the allowed functions (each followed by '('), + - * /
    ( ), and '**' or '^' after a variable or ')' with an exponent of at most 3 digits."""
    if len(text) > max_len or not _depth_ok(text, "(", ")", 8):
        return False
    tokens, pos = [], 0
    while pos < len(text):
        match = _EXPR_TOKEN.match(text, pos)
        if match is None:
            return False
        tokens.append(match.group(1))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if not tokens:
        return False
    powers_after_paren = 0
    for k, tok in enumerate(tokens):
        nxt = tokens[k + 1] if k + 1 < len(tokens) else ""
        prev = tokens[k - 1] if k else ""
        if tok[0].isalnum() and nxt[:1].isalnum():
            return False              # no juxtaposition: "1e9", "2x" are not products here
        if tok.isalpha():
            if len(tok) > 1 and (tok not in functions or nxt != "("):
                return False          # only listed functions, called: never a name
            if len(tok) == 1 and (nxt.isalpha() or nxt == "("):
                return False          # a variable is never called: S(..), N(..) are sympy's
        elif tok == "/" and not division:
            return False
        elif tok in ("**", "^"):
            small = nxt.isdigit() and len(nxt) <= 3
            rational = (nxt == "(" and k + 5 < len(tokens) and tokens[k + 2].isdigit()
                        and tokens[k + 3] == "/" and tokens[k + 4].isdigit()
                        and tokens[k + 5] == ")" and len(tokens[k + 2] + tokens[k + 4]) <= 4)
            if not powers or not (small or rational):
                return False
            if prev == ")":
                powers_after_paren += 1
            elif not (len(prev) == 1 and prev.isalpha()):
                return False          # a number's power could be astronomically large
            if k + 2 < len(tokens) and tokens[k + 2] in ("**", "^"):
                return False          # no towers
    return powers_after_paren <= 1


def _polynomial(text: str) -> bool:
    return _expression(text, frozenset(), division=False, powers=True)


def _symbolic(text: str) -> bool:
    return _expression(text, _FUNCTIONS, division=True, powers=True)


def _arithmetic(text: str) -> bool:
    return _expression(text, frozenset(), division=True, powers=False, max_len=500) and \
        not any(ch.isalpha() for ch in text)


_fraction = _full(r"[-+]?\d{1,40} ?/ ?[-+]?\d{1,40}|[-+]?\d{1,40}"
                  r"|\\d?frac ?\{ ?\d{1,40} ?\} ?\{ ?\d{1,40} ?\}")


def _formula(text: str) -> bool:
    return (len(text) <= 500 and _charset("ABCDEFGHIJKLMNOPQRSTUVWXYZ∧∨¬→↔() ")(text)
            and _depth_ok(text, "(", ")", MAX_DEPTH) and any(ch.isalpha() for ch in text))


_quoted_number = r"""(?:'[-+]?\d{1,20}(?:\.\d{1,20})?'|"[-+]?\d{1,20}(?:\.\d{1,20})?"|[-+]?\d{1,20}(?:\.\d{1,20})?)"""
_number_list = _full(rf"\[ ?(?:{_quoted_number}(?:, ?{_quoted_number}){{0,999}})? ?\]")


def _json(text: str) -> bool:
    """Bracket nesting outside strings at most MAX_DEPTH (json's parser recurses on it)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth -= 1
    return _text(text)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _text(text: str) -> bool:
    return text.count("\n") < MAX_LINES and _CONTROL.search(text) is None


INT_LITERAL = Grammar("INT_LITERAL", "one integer: decimal, 0x.., 0b.. or 0o..",
                      _full(r"-?(?:0[xX][0-9a-fA-F]{1,200}|0[bB][01]{1,800}|0[oO][0-7]{1,300}"
                            r"|\d{1,400})"))
NUMBER = Grammar("NUMBER", "one number (sign, digits, thousands commas, decimals, exponent)", _number)
DIGITS = Grammar("DIGITS", "one number in some base: digits and letters", _full(r"-?[0-9A-Za-z]{1,128}"))
ROW = Grammar("ROW", "integers on one line separated by spaces, or [..] of integers",
              lambda t: _row(t) or _int_list(t))
GRID = Grammar("GRID", "rows of integers, one row per line, or [[..], ..] of integers", _grid, row=_row)
LETTERS = Grammar("LETTERS", "one word of letters", _full(r"[A-Za-z]{1,2000}"))
BOARD = Grammar("BOARD", "rows of Q and _ separated by spaces", _board,
                row=_board_row)
WORD = Grammar("WORD", "one word: printable characters without spaces", _full(r"[!-~]{1,500}"))
FRACTION = Grammar("FRACTION", "a/b, an integer, or \\frac{a}{b}", _fraction)
WORD_OR_INTEGER = Grammar("WORD_OR_INTEGER", "one word or one integer",
                          _full(rf"[A-Za-z]{{1,20}}|{_INT}"))
FORMULA = Grammar("FORMULA", "capital letters, ∧ ∨ ¬ → ↔ and parentheses", _formula)
POLYNOMIAL = Grammar("POLYNOMIAL", "a polynomial in one-letter variables", _polynomial)
SYMBOLIC = Grammar("SYMBOLIC", "a polynomial with / and sin cos tan exp log sqrt asin acos atan",
                   _symbolic)
ARITHMETIC = Grammar("ARITHMETIC", "integers with + - * / and parentheses", _arithmetic)
NUMBER_LIST = Grammar("NUMBER_LIST", "[..] of numbers, quoted or bare", _number_list)
JSON = Grammar("JSON", "JSON, nested at most 16 deep", _json, free=True)
TEXT = Grammar("TEXT", "text of at most 64 lines without control characters", _text, free=True)

GRAMMARS: dict[str, Grammar] = {
    "base_conversion": DIGITS, "basic_arithmetic": NUMBER, "arc_1d": ROW, "bf": WORD,
    "propositional_logic": FORMULA, "fraction_simplification": FRACTION,
    "decimal_arithmetic": NUMBER, "calendar_arithmetic": WORD_OR_INTEGER, "binary_matrix": GRID,
    "chain_sum": NUMBER, "decimal_chain_sum": NUMBER, "products": NUMBER,
    "spiral_matrix": ROW, "string_insertion": LETTERS, "n_queens": BOARD,
    "polynomial_multiplication": POLYNOMIAL, "puzzle24": ARITHMETIC, "countdown": ARITHMETIC,
    "simple_integration": SYMBOLIC, "intermediate_integration": SYMBOLIC,
    "number_sorting": NUMBER_LIST, "bitwise_arithmetic": INT_LITERAL,
    "gsm_symbolic": NUMBER,
    **{task: JSON for task in ("boxnet", "codeio", "game_of_life", "graph_color", "group_anagrams",
                               "jugs", "knight_swap", "palindrome_partitioning")},
}


# modules that call an interpreter, but never on an answer (tests/test_grammars.py's audit)
NOT_ON_ANSWERS = {"codeio": "exec runs the task's own code to make questions",
                  "gsm_symbolic": "eval of the generators' own fractions"}


def grammar(task: str) -> Grammar:
    """The grammar of a task's answers (TEXT for a task whose scorer only compares)."""
    return GRAMMARS.get(task, TEXT)


def accepts(task: str, answer: str) -> bool:
    """Whether ``answer`` may reach ``task``'s verifier."""
    return isinstance(answer, str) and bool(answer) and grammar(task).accepts(answer)
