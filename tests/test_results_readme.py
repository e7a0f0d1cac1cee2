"""results/README.md states the exercise answers: every figure it gives must be one that a
committed report (or record) it links prints, so no number in it is typed by hand or left
behind when a report is regenerated (`bash results/regenerate.sh`)."""

from __future__ import annotations

import re

import pytest

from conftest import REPO

RESULTS = REPO / "results"
DECIMAL = re.compile(r"(?<![\w.])[-−+]?\d+\.\d+(?![\w.])")


def answer_items() -> list[str]:
    """The bullets of the README's "Exercise answers" section that link a report."""
    text = (RESULTS / "README.md").read_text()
    section = text.split("## Exercise answers", 1)[1].split("\n## ", 1)[0]
    items = re.split(r"\n(?=- )", section)
    return [item for item in items if re.search(r"\]\((?!https?:)[^)]+\)", item)]


def numbers(item: str) -> list[str]:
    """Its decimal numbers, outside code spans (commands and file names), minus signs as '-'."""
    prose = re.sub(r"`[^`]*`", "", item)
    return [n.replace("−", "-").lstrip("+") for n in DECIMAL.findall(prose)]


def linked_text(item: str) -> str:
    texts = []
    for link in re.findall(r"\]\(((?!https?:)[^)#]+)\)", item):
        path = RESULTS / link
        assert path.is_file(), f"results/README.md links {link}, which is not there"
        texts.append(path.read_text().replace("−", "-"))
    return "\n".join(texts)


@pytest.mark.parametrize("item", answer_items(), ids=lambda item: item[2:40])
def test_every_number_of_an_answer_is_in_the_report_it_links(item):
    text = linked_text(item)
    # a whole number of the report (0.307 not in 0.3071 nor 10.307), a sentence's full stop
    # after it allowed
    missing = [n for n in numbers(item)
               if not re.search(rf"(?<![\w.]){re.escape(n)}(?!\w|\.\d)", text)]
    assert not missing, f"not in the linked reports: {missing}"


def test_the_answers_link_every_committed_report():
    linked = " ".join(answer_items())
    for report in RESULTS.glob("*/report.md"):
        assert f"{report.parent.name}/report.md" in linked, report


def test_every_benchmark_record_is_listed():
    """A record nobody can find is as good as lost: each file under results/benchmarks/ that
    a run wrote (.txt, .json) is named in results/README.md, which says what made it."""
    text = (RESULTS / "README.md").read_text()
    records = [p for p in (RESULTS / "benchmarks").iterdir() if p.suffix in (".txt", ".json")]
    assert records
    unlisted = sorted(p.name for p in records if p.name not in text)
    assert not unlisted, f"results/README.md does not list {unlisted}"
