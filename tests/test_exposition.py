"""The exposition parser (collectors/exposition.py) against prometheus_client's text parser.

The dcgm source used ``prometheus_client.parser.text_string_to_metric_families`` (strict pass
over the page, then line by line when the page was rejected). The purpose-built parser must
give the same samples: checked here on every recorded page in ../shared/reference/dcgm (read
in place) and every synthetic page in tests/fixtures/dcgm, on hostile lines, and on generated
lines. prometheus_client stays a dependency of the agent's metrics server, so it is there to
compare with.
"""

from __future__ import annotations

import math
import random

import pytest
from fleetlens.collectors.exposition import ExpositionParser, Row, parse_exposition
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FIXTURES, REFERENCE

DCGM_REF = REFERENCE / "dcgm"
PAGES = sorted(DCGM_REF.glob("*.txt")) + sorted((FIXTURES / "dcgm").glob("*.txt"))
needs_reference = pytest.mark.skipif(
    not DCGM_REF.is_dir(), reason=f"recorded dcgm-exporter pages not found at {DCGM_REF}")


# -- what the dcgm source did before -----------------------------------------------------------
def old_parse(text: str) -> tuple[list[tuple], int, bool]:
    """The previous collectors/dcgm.py parse: (rows, bad lines, fell back)."""
    try:
        families = list(text_string_to_metric_families(text))
    except Exception:  # noqa: BLE001 - as the old code: any failure means line by line
        rows, bad = [], 0
        for line in text.splitlines():
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            try:
                fams = list(text_string_to_metric_families(stripped + "\n"))
            except Exception:  # noqa: BLE001
                bad += 1
                continue
            rows.extend((s.name, s.labels, s.value) for f in fams for s in f.samples)
        return rows, bad, True
    return [(s.name, s.labels, s.value) for f in families for s in f.samples], 0, False


def pc_line(line: str) -> list[tuple] | None:
    """prometheus_client's samples for one line, None when it rejects it."""
    try:
        fams = list(text_string_to_metric_families(line + "\n"))
    except Exception:  # noqa: BLE001 - it raises several types on garbage
        return None
    return [(s.name, s.labels, s.value) for f in fams for s in f.samples]


def new_line(line: str) -> list[tuple] | None:
    page = parse_exposition(line)
    if page.bad_lines:
        return None
    return [(r.name, dict(r.labels), r.value) for r in page.rows]


def comparable(rows: list[tuple] | None) -> list[tuple] | None:
    """Names without the ``_total`` prometheus_client adds to counters (fleetlens's field
    lookup takes it off anyway); NaN made equal to itself; the value's type kept (int vs
    float matters for DCGM's int64 sentinels)."""
    if rows is None:
        return None
    out = []
    for name, labels, value in rows:
        nan = isinstance(value, float) and math.isnan(value)
        out.append((name.removesuffix("_total"), dict(labels), type(value).__name__,
                    "nan" if nan else value))
    return out


# -- recorded and synthetic pages --------------------------------------------------------------
@needs_reference
def test_pages_are_there():
    assert len([p for p in PAGES if p.parent == DCGM_REF]) >= 12, f"pages missing in {DCGM_REF}"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_page_gives_the_samples_prometheus_client_gave(path):
    text = path.read_text()
    rows, bad, fell_back = old_parse(text)
    parser = ExpositionParser()
    for _ in range(2):  # the second parse is served from the label cache
        page = parser.parse(text)
        assert comparable([tuple(r) for r in page.rows]) == comparable(rows)
        assert (page.bad_lines, page.malformed) == (bad, fell_back)


@needs_reference
def test_the_two_pages_with_bad_lines_lose_exactly_those_lines():
    edge = parse_exposition((DCGM_REF / "dcgm_edgecases_synthetic.txt").read_text())
    assert (edge.bad_lines, edge.malformed) == (1, True)  # the "ERROR - FAILED ..." blob
    unit = parse_exposition((DCGM_REF / "dcgm_exporter_sample_7_unittest_strings.txt").read_text())
    assert (unit.bad_lines, unit.malformed) == (1, True)  # label name "test-uuid"
    good = parse_exposition((DCGM_REF / "dcgm_8xh100_synthetic.txt").read_text())
    assert (len(good.rows), good.bad_lines, good.malformed) == (320, 0, False)


# -- hostile lines -----------------------------------------------------------------------------
def py_number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


# (line, expected rows as (name, labels, value) or None for a dropped line). Each is also
# compared with prometheus_client below.
HOSTILE = [
    ('m{a="x\\"y"} 1', [("m", {"a": 'x"y'}, 1)]),
    ('m{a="line\\nbreak",b="back\\\\slash"} 1',
     [("m", {"a": "line\nbreak", "b": "back\\slash"}, 1)]),
    ('m{a="\\t"} 1', [("m", {"a": "\\t"}, 1)]),  # only \\, \" and \n are escapes
    ('m{a="}{,=\\"#"} 2', [("m", {"a": '}{,="#'}, 2)]),  # braces and commas inside a value
    ('m{a="1",} 3', [("m", {"a": "1"}, 3)]),  # trailing comma
    ('m{gpu="0", UUID="GPU-1"} 3', [("m", {"gpu": "0", "UUID": "GPU-1"}, 3)]),  # old spacing
    ("m{} 4", [("m", {}, 4)]),
    ("m 5", [("m", {}, 5)]),
    ('m{a="1"} NaN', [("m", {"a": "1"}, math.nan)]),
    ('m{a="1"} +Inf', [("m", {"a": "1"}, math.inf)]),
    ('m{a="1"} -Inf', [("m", {"a": "1"}, -math.inf)]),
    ('m{a="1"} 7 1700000000000', [("m", {"a": "1"}, 7)]),  # timestamp after the value
    ('m{a="1"}\t2.5', [("m", {"a": "1"}, 2.5)]),
    ('   m{a="1"} 2  \r', [("m", {"a": "1"}, 2)]),
    ('m{a="é ü"} 1e3', [("m", {"a": "é ü"}, 1000.0)]),
    ('{__name__="m",a="1"} 1', [("m", {"a": "1"}, 1)]),
    ('m{a="1"} 9223372036854775794', [("m", {"a": "1"}, 9223372036854775794)]),
    ('m{a="1"} 7 garbage', None),  # a timestamp that is not a number
    ('m{a="1"} ERROR - FAILED TO CONVERT TO STRING', None),
    ('m{test-uuid="x"} 1', None),
    ('m{a="1" b="2"} 1', None),  # missing comma
    ('m{a="1",a="2"} 1', None),  # repeated label
    ('m{__x="1"} 1', None),  # reserved label name
    ('m{a="1"} 1_000', None),  # Python's float() would take it
    ('m{a="1} 1', None),  # unclosed quote
    ('m{a="1" 1', None),  # unclosed brace
    ("m{a=1} 1", None),  # unquoted value
    ('m{a="1"}', None),  # no value
    ('m{a="1"} ', None),
    ('m{a="1",,b="2"} 1', None),
    ('m{__name__="n"} 1', None),  # a name twice
    ("m", None),
    ("1 2", None),  # not a metric name
    ('m{a="1"} 0x10', None),
    ('m{a="' + "v" * 5000 + '"} 1', [("m", {"a": "v" * 5000}, 1)]),
    # thousands of digits: whatever int() (or, past its digit limit, float()) makes of them
    ("m " + "9" * 5000, [("m", {}, py_number("9" * 5000))]),
]


@pytest.mark.parametrize(("line", "expected"), HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_line(line, expected):
    got = new_line(line)
    assert comparable(got) == comparable(expected)
    assert comparable(got) == comparable(pc_line(line))


def test_a_bad_line_loses_only_itself():
    good = 'DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-1"} 40'
    lines = [good, *(line for line, _ in HOSTILE), good.replace("40", "41")]
    page = parse_exposition("\n".join(lines))
    dropped = sum(1 for _, expected in HOSTILE if expected is None)
    assert page.bad_lines == dropped and page.malformed
    assert len(page.rows) == len(lines) - dropped
    assert (page.rows[0].value, page.rows[-1].value) == (40, 41)


@pytest.mark.parametrize(("comment", "strict_ok"), [
    ("# HELP m Some help with \"quotes\" and \\ backslash", True),
    ("# TYPE m gauge", True),
    ("# TYPE m untyped", True),
    ("# just a comment, with = and { }", True),
    ("#HELP no space", True),
    ("# TYPE m", False),  # no type
    ("# TYPE m bogus", False),  # unknown type
    ("# HELP 1m bad name", False),
    ('# HELP "unclosed', False),
    ("# TYPE _total counter", False),  # would leave an empty family name
])
def test_help_and_type_lines(comment, strict_ok):
    """Comments never carry samples; one prometheus_client refuses makes the page malformed
    (counted by the dcgm source) and nothing else."""
    page = parse_exposition(f"{comment}\nm 1\n")
    assert [tuple(r) for r in page.rows] == [("m", {}, 1)] and page.bad_lines == 0
    assert page.malformed is not strict_ok
    try:
        list(text_string_to_metric_families(f"{comment}\nm 1\n"))
        pc_ok = True
    except Exception:  # noqa: BLE001
        pc_ok = False
    assert pc_ok is strict_ok


def test_generated_lines_agree_with_prometheus_client():
    """Random lines built from the characters that matter to the grammar (seeded: the same
    lines every run)."""
    pieces = ["m", "a", "_", ":", "{", "}", '"', "\\", "=", ",", " ", "\t", "#", "1", ".", "e",
              "-", "+", "NaN", "Inf", "__name__", "é", "n", "x"]
    rng = random.Random(20261128)
    mismatches = []
    for _ in range(4000):
        body = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.6:
            body = (rng.choice(["m", "DCGM_X", "", "m "]) + "{" + body + "} "
                    + rng.choice(["1", "2.5", "NaN", "1 2", "x", "", "-0"]))
        line = body.strip()
        if not line or line.startswith("#"):
            continue
        if comparable(new_line(line)) != comparable(pc_line(line)):
            mismatches.append(line)
    assert mismatches == []


# -- the label cache ---------------------------------------------------------------------------
def test_rows_with_the_same_label_text_share_one_dict_and_the_cache_keeps_one_page():
    parser = ExpositionParser()
    page_a = 'x{gpu="0",pod="a"} 1\ny{gpu="0",pod="a"} 2\nx{gpu="1",pod="b"} 3\n'
    rows = parser.parse(page_a).rows
    assert rows[0].labels is rows[1].labels and rows[0].labels is not rows[2].labels
    assert rows == [Row("x", {"gpu": "0", "pod": "a"}, 1), Row("y", {"gpu": "0", "pod": "a"}, 2),
                    Row("x", {"gpu": "1", "pod": "b"}, 3)]
    # pods come and go: only the label texts of the latest page are kept
    parser.parse('x{gpu="0",pod="c"} 1\n')
    assert list(parser._labels) == ['gpu="0",pod="c"']
    again = parser.parse(page_a).rows
    assert again == rows
