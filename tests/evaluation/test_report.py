"""`cbir report`: runs side by side as HTML + Markdown with PNG figures, standing alone on disk."""

from __future__ import annotations

import json
import shutil
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from cbir.cli import main
from cbir.errors import CbirError
from cbir.evaluation.quality_run import BenchmarkOptions, run_folder_benchmark
from cbir.evaluation.report import write_report
from cbir.evaluation.report_blocks import Heading, render_html
from cbir.evaluation.results import (
    read_classification,
    write_classification,
    write_vocabulary_sweep,
)

VOID = {"meta", "img", "br", "link", "input", "hr"}
CLASSIFIERS = [
    {"features": "hog", "classifier": "linear_svm", "train_accuracy": 0.71,
     "test_accuracy": 0.52, "test_macro_precision": 0.5, "params": {"C": 0.1}},
    {"features": "hog+gch", "classifier": "random_forest", "train_accuracy": 1.0,
     "test_accuracy": 0.55, "test_macro_precision": 0.56},
]  # fmt: skip
SWEEP = [
    {"size": 32, "davies_bouldin": 2.4, "inertia": 9.1e6},
    {"size": 128, "davies_bouldin": 2.1, "inertia": 7.3e6},
    {"size": 64, "davies_bouldin": 2.2, "inertia": 8.0e6},
]


class Page(HTMLParser):
    """Collects ids, links and image sources, and checks that elements nest properly."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []
        self.tags: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        assert attributes.get("id") not in self.ids, f"id {attributes['id']!r} repeats"
        self.tags.add(tag)
        self.attributes |= set(attributes)
        self.ids.add(attributes.get("id", ""))
        if tag == "a":
            self.links.append(attributes["href"])
        if tag == "img":
            self.images.append(attributes["src"])
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"</{tag}> closes nothing open"

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    assert page.stack == [], f"unclosed elements: {page.stack}"
    return page


@pytest.fixture
def report_runs(folder_runs, tmp_path) -> list[Path]:
    """The gch and hog folder runs (hog with classifier and vocabulary files beside it) and an
    old-style run holding metrics.json alone."""
    hog = tmp_path / "hog"
    shutil.copytree(folder_runs["hog"], hog)
    write_classification(hog, CLASSIFIERS, selection="3-fold grid search on the training images")
    write_vocabulary_sweep(hog, SWEEP)
    old = tmp_path / "old"
    old.mkdir()
    metrics = json.loads((folder_runs["gch"] / "metrics.json").read_text())
    for key in ("iprec_at_recall", "near_duplicates", "without_near_duplicates"):
        del metrics[key]
    (old / "metrics.json").write_text(json.dumps(metrics))
    return [folder_runs["gch"], hog, old]


def test_report_holds_every_section_with_working_relative_links(report_runs, tmp_path):
    out = tmp_path / "report"
    files = write_report(report_runs, out)
    page = parse(files.html.read_text())
    for section in (
        "runs-compared", "folder-photos", "headline-metrics-folder-photos",
        "without-near-duplicate-queries-folder-photos", "precision-recall-folder-photos",
        "per-class-folder-photos", "example-queries", "classifiers", "visual-vocabulary",
        "how-to-read-this-report",
    ):  # fmt: skip
        assert section in page.ids, section
    for link in page.links:
        assert link.startswith("#") and link[1:] in page.ids
    assert page.images
    for source in page.images:
        assert "://" not in source and not source.startswith("/")
        assert (out / urllib.parse.unquote(source)).is_file(), source

    text = " ".join(page.text)
    assert "No full-ranking curve in: old." in text
    assert "hog · linear_svm" in text and "hog+gch · random_forest" in text
    assert "3-fold grid search" in text
    assert "near-duplicate" in text and "✓" in text and "✗" in text

    names = {path.name for path in files.figures}
    assert {"vocabulary-sweep.png", "pr-01-gch.png"} <= names
    for path in files.figures:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200

    markdown = files.markdown.read_text()
    assert markdown.startswith("# cbir retrieval report")
    assert "| run | map\\_cut\\_100 / ceiling |" in markdown
    for target in [line.split("](")[1].split(")")[0] for line in markdown.split("![")[1:]]:
        assert (out / urllib.parse.unquote(target)).is_file(), target


def test_report_numbers_come_from_the_runs(report_runs, tmp_path):
    files = write_report(report_runs[:2], tmp_path / "report")
    markdown = files.markdown.read_text()
    for run in report_runs[:2]:
        metrics = json.loads((run / "metrics.json").read_text())
        assert f"{metrics['map_at_100_normalised']:.4f}" in markdown
        assert f"{metrics['P_10']:.4f}" in markdown
        curve = metrics["iprec_at_recall"]["precision"]
        assert " | ".join(f"{p:.3f}" for p in curve) in markdown


def test_runs_of_different_depths_are_not_ranked_on_depth_cut_measures(
    image_folder, folder_runs, tmp_path
):
    shallow = tmp_path / "gch-depth5"
    run_folder_benchmark(
        image_folder, shallow, extractor_name="gch",
        options=BenchmarkOptions(depth=5, n_examples=0, near_duplicate_threshold=None),
    )  # fmt: skip
    markdown = write_report([shallow, folder_runs["hog"]], tmp_path / "report").markdown
    table = markdown.read_text().split("### Headline metrics")[1].split("\n\n")[1]
    header, _, *rows = table.splitlines()
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns[:3] == ["run", "depth", "map\\_cut\\_k / ceiling"]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        depth_cut = [cells[i] for i, name in enumerate(columns) if "k" in name.split()[0]]
        assert not any(cell.startswith("**") for cell in depth_cut), row
    assert any(cell.strip().startswith("**") for row in rows for cell in row.split("|"))


def test_everything_is_escaped(folder_runs, tmp_path):
    hostile = '<img src=x onerror="alert(1)">&'
    run = tmp_path / hostile.replace("/", "")
    shutil.copytree(folder_runs["gch"], run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["dataset"] = f"<script>alert('x')</script> {hostile}"
    (run / "metrics.json").write_text(json.dumps(metrics))
    per_query = (run / "per_query.tsv").read_text().replace("\tbands\t", f"\t{hostile}\t")
    (run / "per_query.tsv").write_text(per_query)
    write_classification(run, [{**CLASSIFIERS[0], "classifier": "<b>svm</b>"}])

    files = write_report([run], tmp_path / "report")
    html = files.html.read_text()
    assert "<script" not in html and "<b>svm" not in html
    assert "&lt;script&gt;" in html and "&lt;b&gt;svm&lt;/b&gt;" in html
    page = parse(html)
    assert "script" not in page.tags and "b" not in page.tags and "onerror" not in page.attributes
    assert all(source.startswith(("figures/", "examples/")) for source in page.images)
    assert hostile in " ".join(page.text)  # shown as written
    markdown = files.markdown.read_text()
    assert "<script" not in markdown and "<img src=x" not in markdown


def test_examples_that_point_outside_their_folder_are_refused(folder_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(folder_runs["gch"], run)
    examples_file = run / "examples" / "examples.json"
    examples = json.loads(examples_file.read_text())
    examples["queries"][0]["thumbnail"] = "../../../etc/passwd.png"
    examples_file.write_text(json.dumps(examples))
    with pytest.raises(CbirError, match="plain .png names"):
        write_report([run], tmp_path / "report")


def test_run_file_formats_are_checked(tmp_path):
    with pytest.raises(CbirError, match="test_accuracy"):
        write_classification(tmp_path, [{**CLASSIFIERS[0], "test_accuracy": 55.0}])
    (tmp_path / "classification.json").write_text('{"results": [{"features": "hog"}]}')
    with pytest.raises(CbirError, match="classifier"):
        read_classification(tmp_path / "classification.json")
    with pytest.raises(CbirError, match="size, davies_bouldin, inertia"):
        write_vocabulary_sweep(tmp_path, [{"size": 8, "davies_bouldin": 1.0}])


def test_report_command(folder_runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert (
        main(["report", "--out", str(out), str(folder_runs["gch"]), str(folder_runs["hog"])]) == 0
    )
    assert "index.html" in capsys.readouterr().out and (out / "report.md").is_file()
    assert main(["report", "--out", str(folder_runs["gch"]), str(folder_runs["gch"])]) == 2
    assert "is one of the run folders" in capsys.readouterr().err
    assert main(["report", "--out", str(out), str(tmp_path)]) == 2
    assert "is not a benchmark run" in capsys.readouterr().err


def test_headings_that_read_the_same_get_distinct_anchors():
    html = render_html("t", [Heading(2, "Runs"), Heading(3, "Runs"), Heading(2, "Runs")])
    page = parse(html)
    assert {"runs", "runs-2", "runs-3"} <= page.ids
    assert page.links == ["#runs", "#runs-3"]  # the navigation lists the level-2 headings
