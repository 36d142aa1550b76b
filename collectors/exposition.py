"""A Prometheus text-format (0.0.4) parser for scraping an exporter every second, cheaply.

Why not ``prometheus_client.parser.text_string_to_metric_families``, which the dcgm source used
before: on the recorded 8×H100 page (320 samples, 100 kB) it took ~40 ms of CPU per scrape,
most of the agent's 5.6 % of a core at 1 Hz (issue 8's target is 1 %). It scans every label
string character by character, builds family objects fleetlens throws away, and rejects the
whole page for one bad line, which made the source parse such pages a second time line by line.

What this parser does instead:

* **Same lines accepted and rejected as prometheus_client 0.26**, line for line, including its
  leniencies (a metric name before ``{`` is not validated, extra tokens between value and
  timestamp are ignored, ``{a=}`` drops the empty term). ``tests/test_exposition.py`` checks
  this against prometheus_client on the recorded pages, on hostile lines and on generated
  lines. Values are ``int`` when ``int()`` accepts them, else ``float`` (NaN and ±Inf
  included), as there; timestamps are validated and dropped.
* **A malformed line loses only that line**; ``ParsedPage.malformed`` says that a strict
  parser (Prometheus, prometheus_client) would have rejected the page, which includes a HELP or
  TYPE line that prometheus_client refuses (those carry no data here and are otherwise ignored).
* **Label sets are parsed once.** An exporter prints the same label string for a GPU on every
  family and every scrape (8 distinct strings for 320 lines on an 8-GPU node), so the parsed
  dict is cached by the exact text between the braces. The cache is generational: it keeps
  only what the latest page used, so pod churn cannot grow it. Rows with the same label text
  share one dict: treat ``Row.labels`` as read-only.
* **Names are returned as printed.** prometheus_client renamed the samples of a
  ``# TYPE x counter`` family to ``x_total``; ``dcgm_fields.lookup`` accepts both spellings.
* Lines are split on ``\\n`` only (as Prometheus and prometheus_client's page parser do).

Standard library only; no Polars or DuckDB (the agent runs on GPU nodes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

# A legacy metric name (also what an unquoted label name must be). ``match`` with ``$``, as in
# prometheus_client, so a name ending in one newline (from an escape) passes there and here.
_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_ESCAPE = re.compile(r'\\[\\n"]')
_UNESCAPED = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}
_WHITESPACE = " \t\n\r\x0b\x0c"  # string.whitespace: what splits HELP/TYPE lines
# TYPE values prometheus_client accepts ("untyped" is its spelling of "unknown")
_METRIC_TYPES = frozenset({"counter", "gauge", "summary", "histogram", "gaugehistogram",
                           "unknown", "info", "stateset", "untyped"})
_NOT_SIMPLE = object()  # cache marker: this label text needs the general path on every line
_MISSING = object()


class Row(NamedTuple):
    """One exposition line: metric name, labels (shared, read-only), numeric value."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass
class ParsedPage:
    rows: list[Row]
    bad_lines: int = 0  # data lines dropped
    malformed: bool = False  # a strict parser would have rejected the whole page


class ExpositionParser:
    """Parses pages of one endpoint; keeps the label cache between pages (not thread-safe)."""

    def __init__(self) -> None:
        self._labels: dict[str, dict[str, str] | None | object] = {}
        self._comments: dict[str, bool] = {}

    def parse(self, text: str) -> ParsedPage:
        rows: list[Row] = []
        append = rows.append
        bad = 0
        malformed = False
        old_labels, labels_seen = self._labels, {}
        old_comments, comments_seen = self._comments, {}
        for line in text.split("\n"):
            line = line.strip()
            if not line:
                continue
            if line[0] == "#":
                ok = comments_seen.get(line)
                if ok is None:
                    ok = old_comments.get(line)
                    if ok is None:
                        ok = _comment_ok(line)
                    comments_seen[line] = ok
                malformed = malformed or not ok
                continue
            row = self._data_line(line, old_labels, labels_seen)
            if row is None:
                bad += 1
            else:
                append(row)
        self._labels, self._comments = labels_seen, comments_seen
        return ParsedPage(rows, bad, malformed or bad > 0)

    def _data_line(self, line: str, old: dict, seen: dict) -> Row | None:
        """The common shape ``name{labels} value`` with the label text cached; else general."""
        brace = line.find("{")
        if brace < 0:
            return _no_labels(line)
        head = line[:brace]
        if '"' in head or " # " in head:
            return _general(line)
        close = line.rfind("}")
        if close < brace:  # never closed: the value would start with "{"
            return None
        body = line[brace + 1:close]
        labels = seen.get(body, _MISSING)
        if labels is _MISSING:
            labels = old.get(body, _MISSING)
            if labels is _MISSING:
                labels = _simple_labels(body)
            seen[body] = labels
        if labels is _NOT_SIMPLE:
            return _general(line)
        if labels is None:
            return None
        name = head.strip()
        if not name or "__name__" in labels:  # type: ignore[operator]
            return _general(line)
        rest = line[close + 1:]
        tokens = rest.split()
        value = _number(tokens[0]) if len(tokens) == 1 else _value(rest)
        return None if value is None else Row(name, labels, value)  # type: ignore[arg-type]


def parse_exposition(text: str) -> ParsedPage:
    """Parse one page without a cache kept between pages."""
    return ExpositionParser().parse(text)


# -- values ------------------------------------------------------------------------------------
def _number(token: str) -> int | float | None:
    """int if int() takes it, else float, else None; underscores refused (Python allows them)."""
    if "_" in token:
        return None
    if "." not in token:  # int() fails on anything with a dot: skip its exception
        try:
            return int(token)
        except ValueError:
            pass
    try:
        return float(token)
    except ValueError:
        return None


def _value(rest: str) -> int | float | None:
    """Value (and timestamp) after the name/labels, split as prometheus_client splits them:
    on spaces, or on tabs when there is no space; first token the value, last the timestamp
    in ms, anything between ignored."""
    s = rest.lstrip()
    tokens = [t.strip() for t in s.split(" " if " " in s else "\t") if t.strip()]
    if not tokens:
        return None
    value = _number(tokens[0])
    if value is None or len(tokens) == 1:
        return value
    timestamp = _number(tokens[-1])
    if timestamp is None:
        return None
    try:
        timestamp / 1000  # an int beyond float range made prometheus_client raise
    except OverflowError:
        return None
    return value


# -- lines that are not the common shape -------------------------------------------------------
def _no_labels(line: str) -> Row | None:
    """``name value [timestamp]``; the name must be a valid metric name here."""
    end, tab = line.find(" "), line.find("\t")
    if tab >= 0 and (end < 0 or tab < end):
        end = tab
    name = line[:end].strip()  # no blank at all: prometheus_client takes line[:-1] as the name
    if not _METRIC_NAME.match(name):
        return None
    value = _value(line[end + 1:])
    return None if value is None else Row(name, {}, value)


def _general(line: str) -> Row | None:
    """Any line with a ``{``: quote-aware search for the braces, ``__name__`` in the labels."""
    start = _next_unquoted(line, "{")
    if start == -1 or " # " in line[:start]:
        return _no_labels(line)
    name = line[:start].strip()
    end = _next_unquoted(line, "}", start)
    if end == -1:
        return None  # never closed
    labels = _parse_labels(line[start + 1:end])
    if labels is None:
        return None
    if not name:
        name = labels.pop("__name__", "")
        if not name:
            return None
    elif "__name__" in labels:
        return None
    value = _value(line[end + 1:])
    return None if value is None else Row(name, labels, value)


def _simple_labels(body: str) -> dict[str, str] | None | object:
    """Labels of a body taken up to the line's last ``}``: _NOT_SIMPLE when a ``}`` outside
    quotes shows that the labels really end earlier (the general path then handles it)."""
    if _next_unquoted(body, "}") >= 0:
        return _NOT_SIMPLE
    return _parse_labels(body)


# -- label sets (run once per distinct label text) ---------------------------------------------
def _escaped(text: str, pos: int) -> bool:
    """True when text[pos] follows an odd number of backslashes."""
    n = 0
    while pos > n and text[pos - 1 - n] == "\\":
        n += 1
    return n % 2 == 1


def _next_unquoted(text: str, chars: str, start: int = 0) -> int:
    """Index of the first of chars outside double quotes at or after start, or -1."""
    quoted = False
    for i in range(start, len(text)):
        c = text[i]
        if c == '"' and not _escaped(text, i):
            quoted = not quoted
        if not quoted and c in chars:
            return i
    return -1


def _unquote(text: str) -> tuple[str, bool] | None:
    """(text without its quotes and escapes, was quoted); None for a missing closing quote."""
    if not text:
        return text, False
    text = text.strip()
    if not text:
        return None  # blanks only: prometheus_client fails on it (IndexError)
    quoted = text[0] == '"'
    if quoted:
        if len(text) == 1 or text[-1] != '"':
            return None
        text = text[1:-1]
    if "\\" in text:
        text = _ESCAPE.sub(lambda m: _UNESCAPED[m.group(0)], text)
    return text, quoted


def _parse_labels(body: str) -> dict[str, str] | None:
    """The labels between the braces, or None when prometheus_client would refuse them.

    Terms are ``name="value"`` separated by commas; whitespace around them, one leading or
    trailing comma and a term with an empty value (``a=``, dropped) are tolerated; label names
    may be quoted; a term without ``=`` is the metric name (``{"name", a="b"}``). Refused:
    unquoted names that are not metric-name tokens, names starting with ``__`` other than
    ``__name__``, repeated names, unquoted values, text after a closing quote, two commas.
    """
    labels: dict[str, str] = {}
    rest = body.strip()
    while rest:
        if rest[0] == ",":
            rest = rest[1:]
            if not rest:
                break
            if rest[0] == ",":
                return None
        if rest[0] == "}":
            return None  # callers pass the text before the first "}" outside quotes
        split = _next_unquoted(rest, "=,}")
        if split >= 0 and rest[split] == "=":
            name_term, rest = rest[:split], rest[split + 1:]
            split = _next_unquoted(rest, ",}")
        else:
            name_term = "__name__"
        if split == -1:
            split = len(rest)
        term, rest = rest[:split].strip(), rest[split:].strip()
        if not term:
            continue
        unquoted_name = _unquote(name_term)
        if unquoted_name is None:
            return None
        name, name_quoted = unquoted_name
        if not name_quoted and not _METRIC_NAME.match(name):
            return None
        if term[0] != '"' or _closing_quote(term) != len(term) - 1:
            return None
        value = _unquote(term)
        if value is None:
            return None
        if name != "__name__" and name.startswith("__"):
            return None  # reserved label names
        if name in labels:
            return None
        labels[name] = value[0]
    return labels


def _closing_quote(term: str) -> int:
    """Index of the first unescaped quote after the opening one (len(term) when none)."""
    i = 1
    while i < len(term):
        i = term.find('"', i)
        if i == -1:
            return -2
        if not _escaped(term, i):
            return i
        i += 1
    return i


# -- HELP / TYPE -------------------------------------------------------------------------------
def _comment_ok(line: str) -> bool:
    """False for a HELP/TYPE line prometheus_client refuses (an invalid metric name, a TYPE
    without a type or with an unknown one). Other comments are always fine."""
    parts = _split_comment(line)
    if len(parts) < 2 or parts[1] not in ("HELP", "TYPE"):
        return True
    name = ""
    if len(parts) > 2:
        unquoted = _unquote(parts[2])
        if unquoted is None:
            return False
        name, quoted = unquoted
        if not quoted and not _METRIC_NAME.match(name):
            return False
    if parts[1] == "HELP":
        return True
    if len(parts) < 4:
        return False
    if name and parts[3] not in _METRIC_TYPES:
        return False
    return not (parts[3] == "counter" and name == "_total")  # would leave an empty name


def _split_comment(line: str) -> list[str]:
    """Split at whitespace outside quotes into at most 4 parts (the 4th keeps its blanks)."""
    parts = [""]
    x = 0
    while x < len(line):
        at = _next_unquoted(line, _WHITESPACE, x)
        if at == -1:
            parts[-1] = line[x:]
            break
        if at == x:
            x += 1
            continue
        if len(parts) > 3:
            parts[-1] = line[x:]
            break
        parts[-1] = line[x:at]
        x = at + 1
        parts.append("")
    return parts
