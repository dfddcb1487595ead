"""The documentation that ships with the repository: every relative link in README.md and docs/
resolves to a file or folder inside the repository, and the worked examples of
docs/semantics.md are what the library computes."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

from jax_natten import neighborhood

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and <img src="target">; a target with a scheme or a leading "#" is not relative.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)[^)]*\)|src=\"([^\"]+)\"")


def relative_links(text):
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        yield target.split("#")[0]


def test_docs_exist():
    assert {"semantics.md", "benchmarks.md"} <= {p.name for p in DOCUMENTS}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.name)
def test_relative_links_resolve_inside_the_repository(document):
    links = list(relative_links(document.read_text()))
    broken = []
    for target in links:
        path = (document.parent / target).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(target)
    assert not broken, f"{document.name}: links outside the repository or to nothing: {broken}"


def test_link_check_finds_links():
    """The check above sees links of both forms, and tells relative ones from the others."""
    text = "[a](docs/x.md#part) [b](https://example.com) [c](#here) <img src=\"../up.png\"> [d](y.md \"title\")"
    assert list(relative_links(text)) == ["docs/x.md", "../up.png", "y.md"]


def _keys(text):
    """'{0,2,4}' or '{0..3}' -> the key positions."""
    keys = []
    for part in text.strip("{}").split(","):
        first, _, last = part.partition("..")
        keys.extend(range(int(first), int(last or first) + 1))
    return keys


def worked_examples():
    """Rows of the worked-examples table: ((L, k, s, d, causal), {query: keys})."""
    text = (ROOT / "docs" / "semantics.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (\d+) \| (\d+) \| (\d+) \| (yes|no) \| (.+) \|$", text, re.MULTILINE)
    examples = []
    for L, k, s, d, causal, mapping in rows:
        attended = {int(q): _keys(keys) for q, keys in re.findall(r"(\d+)->(\{[^}]*\})", mapping)}
        examples.append(((int(L), int(k), int(s), int(d), causal == "yes"), attended))
    return examples


def test_worked_examples_table_is_complete():
    examples = worked_examples()
    assert len(examples) == 10
    for (L, *_), attended in examples:
        assert sorted(attended) == list(range(L))


@pytest.mark.parametrize("axis,attended", worked_examples(), ids=lambda x: str(x) if isinstance(x, tuple) else "")
def test_worked_examples_match_the_library(axis, attended):
    table = neighborhood.axis_neighbors(*axis)
    got = {q: [int(key) for key in table.keys[q][table.valid[q]]] for q in range(axis[0])}
    assert got == attended
    assert np.all(table.valid.sum(1) >= 1)
