"""Go ``regexp`` (RE2) syntax for the twin: accept what Go accepts, reject what it
rejects, and match with Python's ``re`` the way Go would.

Cilium compiles a CiliumL2AnnouncementPolicy's ``interfaces`` with Go's
``regexp.Compile`` and matches with ``MatchString`` (unanchored, like
``re.search``).  Python's ``re`` differs from Go's syntax in both directions:

Go rejects, Python accepts (rejected here with Go's wording):
  lookarounds ``(?=`` ``(?!`` ``(?<=`` ``(?<!``, atomic groups ``(?>``,
  possessive quantifiers ``a*+`` ``a++`` ``a?+`` ``a{2}+``, backreferences
  ``\\1`` ``(?P=name)``, conditionals ``(?(1)a|b)``, comments ``(?#...)``,
  ``\\Z`` ``\\u0041`` ``\\N{...}``, flags other than ``imsU`` (``(?x)`` ``(?a)``),
  repeat counts above 1000.
Go accepts, Python rejects or reads differently (translated here):
  ``\\z`` (end of text: Python's ``\\Z``), ``(?<name>...)`` (Python ``(?P<name>``),
  ``\\Q...\\E`` (a literal), ``\\x{10FFFF}``, octal ``\\123``, POSIX classes
  ``[[:alpha:]]``, flags in the middle of a pattern (``a(?i)b``: Python 3.11
  allows global flags only at the start), and ``{`` that does not start a
  valid repeat (``a{,3}`` is a literal in Go, a 0..3 repeat in Python).
Go and Python read differently (translated here):
  ``\\d`` ``\\w`` ``\\s`` ``\\b`` are ASCII in Go and Unicode in Python (``\\s`` in Go
  has no ``\\v``): spelled out as ASCII classes.
Go accepts and the twin cannot match (an error saying so):
  Unicode classes ``\\pL`` ``\\p{Greek}``, the ungreedy flag ``(?U)``, ``\\D`` ``\\S``
  ``\\W`` and negated POSIX classes inside a bracket class.
"""
from __future__ import annotations

import re

MAX_REPEAT = 1000  # Go's regexp/syntax limit on {n,m}
MAX_NESTING = 1000  # Go's regexp/syntax limit on nesting ("expression nests too deeply")

_POSIX = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ", "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~", "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_", "xdigit": "0-9A-Fa-f",
}
_REPEAT = re.compile(r"\{(\d+)(,(\d*))?\}")
#: Go's Perl classes are ASCII-only (Python's are Unicode): spelled out, inside and outside a class
_PERL = {"d": "0-9", "s": "\\t\\n\\f\\r ", "w": "0-9A-Za-z_"}


class GoRegexError(ValueError):
    """The pattern is not a valid Go regexp (or uses Go syntax the twin cannot match)."""


def _escape_char(ch: str) -> str:
    return re.escape(ch) if ch != "\n" else "\\n"


def _escape(rx: str, i: int, in_class: bool) -> tuple[str, int]:
    """Translate the escape at ``rx[i] == '\\'``; returns (python text, next index)."""
    if i + 1 >= len(rx):
        raise GoRegexError("trailing backslash at end of expression")
    c = rx[i + 1]
    if c in "1234567" and i + 2 < len(rx) and rx[i + 2] in "01234567" or c == "0":
        j = i + 2
        while j < len(rx) and j < i + 4 and rx[j] in "01234567":
            j += 1
        return _escape_char(chr(int(rx[i + 1:j], 8))), j
    if c.isdigit():
        raise GoRegexError(f"invalid escape sequence: `\\{c}` (Go has no backreferences)")
    if c == "x":
        if i + 2 < len(rx) and rx[i + 2] == "{":
            end = rx.find("}", i + 3)
            digits = rx[i + 3:end] if end > 0 else ""
            if end < 0 or not digits or not all(d in "0123456789abcdefABCDEF" for d in digits) or int(digits, 16) > 0x10FFFF:
                raise GoRegexError(f"invalid escape sequence: `{rx[i:end + 1 if end > 0 else len(rx)]}`")
            return _escape_char(chr(int(digits, 16))), end + 1
        digits = rx[i + 2:i + 4]
        if len(digits) != 2 or not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise GoRegexError(f"invalid escape sequence: `{rx[i:i + 4]}`")
        return _escape_char(chr(int(digits, 16))), i + 4
    if c in "pP":
        raise GoRegexError(f"`\\{c}` Unicode classes are valid in Go but the twin cannot match them "
                           "(Python's re has none); use an explicit character class")
    if c.lower() in _PERL:
        body = _PERL[c.lower()]
        if in_class:
            if c.isupper():
                raise GoRegexError(f"`\\{c}` inside a class is valid in Go but the twin cannot match it; "
                                   "write the complement as its own class")
            return body, i + 2
        return (f"[{body}]" if c.islower() else f"[^{body}]"), i + 2
    if c in "afnrtv":
        return "\\" + c, i + 2
    if not in_class:
        if c == "z":
            return "\\Z", i + 2
        if c == "A":
            return "\\A", i + 2
        if c in "bB":  # Go's word boundary is ASCII
            return f"(?a:\\{c})", i + 2
        if c == "Q":
            end = rx.find("\\E", i + 2)
            lit = rx[i + 2:] if end < 0 else rx[i + 2:end]
            return "".join(_escape_char(ch) for ch in lit), (len(rx) if end < 0 else end + 2)
    if c.isascii() and not c.isalnum() and c != "_" and c.isprintable():
        return re.escape(c) if c != " " else " ", i + 2
    raise GoRegexError(f"invalid escape sequence: `\\{c}`")


def _char_class(rx: str, i: int) -> tuple[str, int]:
    """Translate the class starting at ``rx[i] == '['``."""
    out = ["["]
    j = i + 1
    if j < len(rx) and rx[j] == "^":
        out.append("^")
        j += 1
    first = True
    while True:
        if j >= len(rx):
            raise GoRegexError(f"missing closing ]: `{rx[i:]}`")
        ch = rx[j]
        if ch == "]" and not first:
            out.append("]")
            return "".join(out), j + 1
        first = False
        if ch == "[" and rx.startswith("[:", j):
            end = rx.find(":]", j + 2)
            if end > 0:
                name = rx[j + 2:end]
                neg = name.startswith("^")
                name = name[1:] if neg else name
                if name not in _POSIX:
                    raise GoRegexError(f"invalid character class range: `[:{rx[j + 2:end]}:]`")
                if neg:
                    raise GoRegexError(f"negated POSIX class `[:^{name}:]` is valid in Go but the twin cannot "
                                       "match it inside a class; write the complement explicitly")
                out.append(_POSIX[name])
                j = end + 2
                continue
        if ch == "\\":
            text, j = _escape(rx, j, True)
            out.append(text)
            continue
        out.append("\\" + ch if ch in "[]&~|" else ch)
        j += 1


def translate(rx: str) -> str:
    """A Python pattern that matches what Go's ``regexp`` matches for ``rx``.

    Raises :class:`GoRegexError` where ``regexp.Compile`` fails (Go's message
    where it has one), or where Go accepts syntax the twin cannot reproduce.
    """
    out: list[str] = []
    # per open group: the flag groups "(?i:" opened by a mid-pattern "(?i)", closed with the group
    opened: list[list[str]] = [[]]
    i = 0
    last_quant = False  # the previous item was a repetition operator
    can_repeat = False  # there is something to repeat
    while i < len(rx):
        if len(opened) > MAX_NESTING:
            raise GoRegexError(f"expression nests too deeply (more than {MAX_NESTING} groups)")
        ch = rx[i]
        if ch in "*+?" or (ch == "{" and _REPEAT.match(rx, i)):
            if ch == "{":
                m = _REPEAT.match(rx, i)
                lo, hi = int(m.group(1)), m.group(3)
                if lo > MAX_REPEAT or (hi and int(hi) > MAX_REPEAT) or (hi and int(hi) < lo):
                    raise GoRegexError(f"invalid repeat count: `{m.group(0)}`")
                op, nxt = m.group(0), m.end()
            else:
                op, nxt = ch, i + 1
            if last_quant:
                raise GoRegexError(f"invalid nested repetition operator: `{rx[max(0, i - 2):nxt]}`")
            if not can_repeat:
                raise GoRegexError(f"missing argument to repetition operator: `{op}`")
            if nxt < len(rx) and rx[nxt] == "?":  # non-greedy
                op, nxt = op + "?", nxt + 1
            out.append(op)
            i = nxt
            last_quant = True
            continue
        last_quant = False
        if ch == "\\":
            text, i = _escape(rx, i, False)
            out.append(text)
            if text in ("\\A", "\\Z"):
                out[-1] = f"(?:{text})"
            can_repeat = True
            continue
        if ch == "[":
            text, i = _char_class(rx, i)
            out.append(text)
            can_repeat = True
            continue
        if ch == "(":
            if rx.startswith("(?", i):
                rest = rx[i + 2:]
                if rest.startswith("P<") or rest.startswith("<") and not rest.startswith(("<=", "<!")):
                    start = i + 2 + (2 if rest.startswith("P<") else 1)
                    end = rx.find(">", start)
                    name = rx[start:end] if end > 0 else ""
                    if end < 0 or not re.fullmatch(r"[A-Za-z0-9_]+", name):
                        raise GoRegexError(f"invalid named capture: `{rx[i:end + 1 if end > 0 else len(rx)]}`")
                    out.append(f"(?P<{name}>")
                    opened.append([])
                    i = end + 1
                    can_repeat = False
                    continue
                m = re.match(r"\(\?([A-Za-z-]*)([:)])", rx[i:])
                if not m:
                    raise GoRegexError(f"invalid or unsupported Perl syntax: `{rx[i:i + 3]}`")
                flags = m.group(1)
                if any(f not in "imsU-" for f in flags) or flags.count("-") > 1 or flags.endswith("-") \
                        or (not flags and m.group(2) == ")"):
                    raise GoRegexError(f"invalid or unsupported Perl syntax: `{m.group(0)}`")
                on, _, off = flags.partition("-")
                if "U" in flags:
                    raise GoRegexError("the ungreedy flag `U` is valid in Go but the twin cannot match it "
                                       "(Python's re has no such flag)")
                py = f"(?{on}{'-' + off if off else ''}:" if flags else "(?:"
                out.append(py)
                i += len(m.group(0))
                if m.group(2) == ":":
                    opened.append([])
                else:  # "(?i)": the flags hold to the end of the enclosing group
                    opened[-1].append(py)
                can_repeat = False
                continue
            out.append("(")
            opened.append([])
            i += 1
            can_repeat = False
            continue
        if ch == ")":
            if len(opened) == 1:
                raise GoRegexError(f"unexpected ): `{rx}`")
            out.append(")" * len(opened.pop()) + ")")
            i += 1
            can_repeat = True
            continue
        if ch == "|":
            # Go's flags hold to the end of the group, across |: close them here, reopen them after
            out.append(")" * len(opened[-1]) + "|" + "".join(opened[-1]))
            i += 1
            can_repeat = False
            continue
        if ch in "^$.":
            out.append(ch if ch == "." else f"(?:{ch})")  # Go lets an anchor be repeated (`^*`)
            can_repeat = True
            i += 1
            continue
        out.append(_escape_char(ch) if ch in "{}]#& ~" or not ch.isascii() else ch)
        can_repeat = True
        i += 1
    if len(opened) > 1:
        raise GoRegexError(f"missing closing ): `{rx}`")
    out.append(")" * len(opened[0]))
    return "".join(out)


def go_compile(rx: str) -> re.Pattern:
    """Compile a Go regexp for matching with Go's meaning (``.search`` = Go's ``MatchString``)."""
    py = translate(rx)
    try:
        return re.compile(py)
    except RecursionError:
        raise GoRegexError("valid in Go, but it nests too deeply for the twin's regexp engine "
                           "(Python's re); nest fewer groups") from None
    except re.error as exc:
        # both reject these; say it in Go's words
        for py_says, go_says in _SAME_ERRORS:
            if py_says in str(exc):
                raise GoRegexError(f"{go_says} ({exc})") from None
        raise GoRegexError(f"{exc}") from None


#: errors Go and Python's re share, only worded differently (Python's words, Go's words)
_SAME_ERRORS = (("bad character range", "invalid character class range"),
                ("redefinition of group name", "duplicate capture group name"))
