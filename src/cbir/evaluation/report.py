"""`cbir report`: benchmark runs compared side by side, as a static HTML page and Markdown.

    <out>/index.html   the report; opens from disk, every link relative, no script
    <out>/report.md    the same blocks as Markdown
    <out>/figures/     precision-recall, per-class and vocabulary figures (PNG)
    <out>/examples/    example thumbnails copied from each run, so the report stands alone

Runs are grouped by dataset (comparing figures across datasets means nothing). The report takes
whatever run folders it is given and shows what each holds: a section a run cannot fill (an
older run without a full-ranking precision-recall curve, a run without classification.json)
says so instead of failing.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cbir.errors import CbirError
from cbir.evaluation import figures
from cbir.evaluation.report_blocks import (
    Block,
    Bullets,
    Cell,
    ExampleGrid,
    Figure,
    Heading,
    Table,
    Text,
    Thumb,
    render_html,
    render_markdown,
)
from cbir.evaluation.results import RunResult, read_run_folder
from cbir.storage import atomic_write_text

REPORT_HTML = "index.html"
REPORT_MARKDOWN = "report.md"
FIGURES_DIR = "figures"
EXAMPLES_DIR = "examples"
DEFAULT_TITLE = "cbir retrieval report"
_PIXELATED_BELOW = 48  # thumbnails narrower than this are tiny originals (CIFAR-10: 32 px)


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    figures: list[Path]


@dataclass
class _Run:
    result: RunResult
    name: str  # shown in tables and legends
    slug: str  # used in file names
    colour: str

    @property
    def metrics(self) -> dict[str, Any]:
        return self.result.metrics

    @property
    def depth(self) -> int:
        return int(self.metrics["depth"])


def write_report(
    run_folders: Sequence[str | Path], out_dir: str | Path, title: str = DEFAULT_TITLE
) -> ReportFiles:
    """Read the run folders and write the report into `out_dir`."""
    if not run_folders:
        raise CbirError("give at least one benchmark run folder to report on")
    out_dir = Path(out_dir)
    if any(out_dir.resolve() == Path(folder).resolve() for folder in run_folders):
        raise CbirError(f"--out {out_dir} is one of the run folders; choose another folder")
    runs = _named([read_run_folder(folder) for folder in run_folders])
    for generated in (FIGURES_DIR, EXAMPLES_DIR):  # a previous report's files, never a run's
        shutil.rmtree(out_dir / generated, ignore_errors=True)
    (out_dir / FIGURES_DIR).mkdir(parents=True)

    written: list[Path] = []
    blocks: list[Block] = _runs_section(runs)
    for dataset, group in _by_dataset(runs).items():
        blocks += _dataset_section(dataset, group, out_dir, written)
    blocks += _examples_section(runs, out_dir)
    blocks += _classification_section(runs)
    blocks += _vocabulary_section(runs, out_dir, written)
    blocks += _reading_guide()
    html_path, markdown_path = out_dir / REPORT_HTML, out_dir / REPORT_MARKDOWN
    atomic_write_text(html_path, render_html(title, blocks))
    atomic_write_text(markdown_path, render_markdown(title, blocks))
    return ReportFiles(html_path, markdown_path, written)


def _named(results: list[RunResult]) -> list[_Run]:
    """Display names: the folder name, with its parent when two folders share a name."""
    names = [result.folder.resolve().name for result in results]
    runs = []
    for i, result in enumerate(results):
        name = names[i]
        if names.count(name) > 1:
            name = "/".join(result.folder.resolve().parts[-2:])
        if any(run.name == name for run in runs):
            name = f"{name} ({i + 1})"
        slug = f"{i + 1:02d}-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "run")
        runs.append(_Run(result, name, slug, figures.run_colour(i)))
    return runs


def _by_dataset(runs: list[_Run]) -> dict[str, list[_Run]]:
    groups: dict[str, list[_Run]] = {}
    for run in runs:
        groups.setdefault(str(run.metrics["dataset"]) or "unnamed dataset", []).append(run)
    return groups


# --- formatting helpers ------------------------------------------------------------------------


def _absent(text: str) -> Text:
    """A section a run cannot fill says so, in a muted line."""
    return Text(text, muted=True)


def _number(value: Any, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _count(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


@dataclass
class _Column:
    """A numeric table column: its value in one metrics dict, its text, whether higher wins."""

    label: str
    value: Callable[[dict[str, Any], int], float | None]
    text: Callable[[dict[str, Any], int, float], str] = lambda m, d, v: _number(v)
    best: bool = True  # bold the highest
    title: str = ""


def _metric_table(rows: list[tuple[str, dict[str, Any], int]], columns: list[_Column]) -> Table:
    """One row per (run name, metrics, depth); the best value of each column in bold."""
    values = [[column.value(m, depth) for column in columns] for _, m, depth in rows]
    best = [
        max((row[i] for row in values if row[i] is not None), default=None) if c.best else None
        for i, c in enumerate(columns)
    ]
    table_rows = []
    for (name, m, depth), row in zip(rows, values, strict=True):
        cells = [Cell(name)]
        for i, (column, value) in enumerate(zip(columns, row, strict=True)):
            text = "–" if value is None else column.text(m, depth, value)
            strong = value is not None and value == best[i] and len(rows) > 1
            cells.append(Cell(text, strong=strong, title=column.title))
        table_rows.append(cells)
    return Table(
        ["run", *(column.label for column in columns)], table_rows, set(range(1, len(columns) + 1))
    )


def _get(key: Callable[[int], str]) -> Callable[[dict[str, Any], int], float | None]:
    return lambda metrics, depth: metrics.get(key(depth))


def _depth_label(group: list[_Run]) -> str:
    depths = {run.depth for run in group}
    return str(depths.pop()) if len(depths) == 1 else "k"


# --- sections ----------------------------------------------------------------------------------


def _runs_section(runs: list[_Run]) -> list[Block]:
    rows = []
    for run in runs:
        m = run.metrics
        near = m.get("near_duplicates")
        rows.append([
            Cell(run.name, title=str(run.result.folder)),
            Cell(str(m["dataset"])),
            Cell(str(m.get("protocol", "index/queries"))),
            Cell(f"{_count(m['n_queries'])} × {_count(m['n_index'])}"),
            Cell(str(m["extractor"].get("name", "?"))),
            Cell(json.dumps(m["extractor"].get("params", {}), sort_keys=True)),
            Cell(str(m.get("extractor_fit", "not recorded"))),
            Cell(f"{near['count']:,} (cosine ≥ {near['threshold']})" if near else "not checked"),
        ])  # fmt: skip
    columns = [
        "run", "dataset", "protocol", "queries × index", "extractor", "parameters", "fitting",
        "near-duplicate queries",
    ]  # fmt: skip
    return [
        Heading(2, "Runs compared"),
        Text(
            "Each run is one benchmark folder (run.txt, per_query.tsv, metrics.json). "
            "Figures are comparable only within one dataset, so the sections below group the "
            "runs by dataset."
        ),
        Table(columns, rows),
    ]


def _headline_columns(depth: str) -> list[_Column]:
    """`depth` "k" when the runs differ in depth: a depth column appears, and the measures cut
    at the depth are not ranked against each other."""
    mixed = depth == "k"
    depth_column = _Column("depth", lambda m, d: d, text=lambda m, d, v: str(v), best=False)
    return [
        *([depth_column] if mixed else []),
        _Column(
            f"map_cut_{depth} / ceiling", _get(lambda d: f"map_cut_{d}"),
            text=lambda m, d, v: f"{v:.5f} / {_number(m.get('map_cut_ceiling'))}",
            best=not mixed,
            title="trec_eval's map_cut: precision summed at each relevant rank within the "
            "depth, divided by R; it cannot exceed the ceiling, depth / R",
        ),
        _Column(
            f"mAP@{depth} normalised", _get(lambda d: f"map_at_{d}_normalised"), best=not mixed,
            title="the same sum divided by min(R, depth): ceiling 1.0",
        ),
        _Column("P@10", _get(lambda d: "P_10")),
        _Column(f"P@{depth}", _get(lambda d: f"P_{d}"), best=not mixed),
        _Column("nDCG@10", _get(lambda d: "ndcg_cut_10")),
        _Column("MRR", _get(lambda d: "recip_rank"), title="mean reciprocal rank"),
        _Column("map_all", _get(lambda d: "map_all"), title="AP over the full ranking"),
        *(
            _Column(
                f"{step} s", lambda m, d, step=step: m.get("timings", {}).get(f"{step}_s"),
                text=lambda m, d, v: f"{v:.1f}", best=False,
            )
            for step in ("extract", "search", "total")
        ),
    ]  # fmt: skip


def _dataset_section(
    dataset: str, group: list[_Run], out_dir: Path, written: list[Path]
) -> list[Block]:
    depth = _depth_label(group)
    slug = group[0].slug
    blocks: list[Block] = [Heading(2, dataset), Text(_protocol_text(group))]
    blocks += [Heading(3, f"Headline metrics — {dataset}")]
    supervised = [r for r in group if is_supervised(r.metrics)]
    kinds = [("", group)]
    if supervised and len(supervised) < len(group):  # never ranked against each other
        unsupervised = [r for r in group if not is_supervised(r.metrics)]
        kinds = [("Unsupervised runs", unsupervised), ("Supervised runs", supervised)]
        blocks.append(
            Text(
                "Supervised runs use an extractor that learnt from class labels (how, in "
                "each run's fit line below); they are not comparable with unsupervised ones, "
                "so each kind has its own table and its own best values."
            )
        )
    for title, runs in kinds:
        if title:
            blocks.append(Heading(4, f"{title} — {dataset}"))
        blocks.append(
            _metric_table([(r.name, r.metrics, r.depth) for r in runs], _headline_columns(depth))
        )
    blocks.append(
        Text(
            "Bold: the best run in each column. Means are over the queries with at least one "
            "relevant image, as trec_eval computes them.",
            muted=True,
        )
    )
    fits = [(r.name, r.metrics.get("extractor_fit")) for r in group]
    fitted = [f"{name}: {fit}" for name, fit in fits if fit and fit != "not needed"]
    if fitted:
        blocks.append(Text("Extractor fit — " + "; ".join(fitted) + ".", muted=True))
    blocks += _near_duplicate_blocks(dataset, group, depth)
    blocks += _precision_recall_blocks(dataset, group, out_dir / FIGURES_DIR, slug, written)
    blocks += _per_class_blocks(dataset, group, out_dir / FIGURES_DIR, slug, written)
    return blocks


def is_supervised(metrics: dict[str, Any]) -> bool:
    """The run's extractor learnt from class labels (runs from before the `supervised` key
    said so only in their fit line)."""
    if "supervised" in metrics:
        return bool(metrics["supervised"])
    return "labels included" in str(metrics.get("extractor_fit", ""))


def _protocol_text(group: list[_Run]) -> str:
    m = group[0].metrics
    same = all(
        (r.metrics["n_queries"], r.metrics["n_index"]) == (m["n_queries"], m["n_index"])
        for r in group
    )
    if m.get("protocol") == "leave-one-out":
        text = (
            f"Leave-one-out: each of the {_count(m['n_index'])} labelled images is a query "
            "against all the others and is left out of its own results; a result is relevant "
            "when it is in the query's class, so R is the class size minus one."
        )
        without = m.get("n_queries_without_relevant", 0)
        if without:
            text += (
                f" {_plural(without, 'query', 'queries')} whose class holds a single image "
                "(R = 0) are left out of every mean, as trec_eval leaves out queries absent "
                "from the qrels."
            )
        skipped = m.get("skipped") or {}
        if any(skipped.values()):
            text += (
                f" Not used: {skipped.get('unlabelled', 0):,} images outside any class "
                f"subfolder, {skipped.get('unreadable', 0):,} unreadable files."
            )
    else:
        text = (
            f"{_count(m['n_queries'])} queries searched against {_count(m['n_index'])} index "
            "images; a result is relevant when it has the query's class."
        )
    if not same:
        text += " The runs differ in size; see the table above."
    return text


def _near_duplicate_blocks(dataset: str, group: list[_Run], depth: str) -> list[Block]:
    checked = [r for r in group if "without_near_duplicates" in r.metrics]
    if not checked:
        return []
    rows = [(r.name, r.metrics["without_near_duplicates"], r.depth) for r in checked]
    columns = [
        _Column(f"mAP@{depth} normalised", _get(lambda k: f"map_at_{k}_normalised")),
        _Column("P@10", _get(lambda k: "P_10")),
        _Column("nDCG@10", _get(lambda k: "ndcg_cut_10")),
        _Column("map_all", _get(lambda k: "map_all")),
        _Column(
            "queries kept", _get(lambda k: "n_queries_evaluated"),
            text=lambda m, k, v: _count(v), best=False,
        ),
    ]  # fmt: skip
    table = _metric_table(rows, columns)
    near = checked[0].metrics["near_duplicates"]
    changes = []
    for run in checked:
        key = f"map_at_{run.depth}_normalised"
        before, after = run.metrics.get(key), run.metrics["without_near_duplicates"].get(key)
        if before is not None and after is not None:
            changes.append(
                f"{run.name}: {run.metrics['near_duplicates']['count']:,} flagged queries; "
                f"mAP@{run.depth} normalised {before:.4f} with them, {after:.4f} without"
            )
    return [
        Heading(3, f"Without near-duplicate queries — {dataset}"),
        Text(
            "A query that is a near-copy of an index image finds its copy at rank 1 and "
            f"flatters the scores. Method: {near['method']} (threshold {near['threshold']}). "
            "The same measures over the other queries:"
        ),
        table,
        Bullets(changes),
    ]


def _precision_recall_blocks(
    dataset: str, group: list[_Run], figure_dir: Path, slug: str, written: list[Path]
) -> list[Block]:
    with_curve = [r for r in group if "iprec_at_recall" in r.metrics]
    blocks: list[Block] = [Heading(3, f"Precision–recall — {dataset}")]
    if not with_curve:
        return blocks + [_absent("No run here holds a full-ranking curve (see --no-map-all).")]
    curves = [
        figures.Series(
            r.name,
            r.colour,
            r.metrics["iprec_at_recall"]["recall"],
            r.metrics["iprec_at_recall"]["precision"],
        )  # fmt: skip
        for r in with_curve
    ]
    path = figures.precision_recall(
        curves, figure_dir / f"pr-{slug}.png", f"11-point interpolated precision, {dataset}"
    )
    written.append(path)
    levels = with_curve[0].metrics["iprec_at_recall"]["recall"]
    table = Table(
        ["run", *(f"{level:.1f}" for level in levels)],
        [[Cell(c.name), *(Cell(_number(p, 3)) for p in c.y)] for c in curves],
        set(range(1, len(levels) + 1)),
    )
    blocks += [
        Figure(
            f"{FIGURES_DIR}/{path.name}",
            "Interpolated precision at 11 recall levels over the full ranking of the whole "
            "index (trec_eval's iprec_at_recall on a run listing every index image). A "
            "depth-100 run would stop at recall 100 / R.",
        ),
        table,
    ]
    missing = [r.name for r in group if r not in with_curve]
    if missing:
        blocks.append(_absent(f"No full-ranking curve in: {', '.join(missing)}."))
    return blocks


def _per_class(run: _Run, column: str) -> dict[str, float] | None:
    """Mean of a per_query.tsv column by class, over queries with R > 0."""
    table = run.result.per_query
    if table is None or column not in table or "label" not in table:
        return None
    labels = np.array(table["label"])
    values = np.array(table[column], dtype=np.float64)
    evaluated = np.array(table["n_relevant"], dtype=np.int64) > 0
    return {
        label: float(values[evaluated & (labels == label)].mean())
        for label in sorted(set(labels[evaluated].tolist()))
    }


def _per_class_blocks(
    dataset: str, group: list[_Run], figure_dir: Path, slug: str, written: list[Path]
) -> list[Block]:
    """Per-class means of normalised mAP@k and map_all: one figure, one table."""
    blocks: list[Block] = [Heading(3, f"Per class — {dataset}")]
    measures = [("mAP@{d} normalised", "map_at_{d}_normalised"), ("map_all", "map_all")]
    panels: list[tuple[str, list[tuple[_Run, dict[str, float]]]]] = []
    for label, column in measures:
        found = [(run, _per_class(run, column.format(d=run.depth))) for run in group]
        found = [(run, values) for run, values in found if values]
        if found:
            panels.append((label.format(d=_depth_label(group)), found))
    if not panels:
        return blocks + [_absent("No per_query.tsv in these runs.")]
    classes = sorted({c for _, found in panels for _, values in found for c in values})
    figure_panels = [
        (measure, [_bars(run, values, classes) for run, values in found])
        for measure, found in panels
    ]
    path = figures.per_class_bars(classes, figure_panels, figure_dir / f"class-{slug}.png")
    written.append(path)
    columns = [
        (f"{run.name}: {measure}", values) for measure, found in panels for run, values in found
    ]
    rows = [[Cell(c), *(Cell(_number(values.get(c))) for _, values in columns)] for c in classes]
    return blocks + [
        Figure(
            f"{FIGURES_DIR}/{path.name}",
            f"Mean over each class's queries (those with R > 0), {dataset}.",
        ),
        Table(["class", *(name for name, _ in columns)], rows, set(range(1, len(columns) + 1))),
    ]


def _bars(run: _Run, values: dict[str, float], classes: list[str]) -> figures.Series:
    return figures.Series(run.name, run.colour, [], [values.get(c, 0.0) for c in classes])


def _examples_section(runs: list[_Run], out_dir: Path) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, "Example queries"),
        Text(
            "A fixed, seeded sample of queries (one per class in turn) with their top results: "
            "✓ and a green frame mark a relevant result (same class), ✗ and red one that is "
            "not. Runs on the same dataset with the same seed show the same queries."
        ),
    ]
    for run in runs:
        examples = run.result.examples
        if not examples or not examples["queries"]:
            blocks.append(_absent(f"{run.name}: no examples saved in this run."))
            continue
        grid = _example_grid(run, examples, out_dir)
        blocks += [Heading(3, f"{run.name} — {run.metrics['dataset']}"), grid]
    return blocks


def _example_grid(run: _Run, examples: dict[str, Any], out_dir: Path) -> ExampleGrid:
    target = out_dir / EXAMPLES_DIR / run.slug
    target.mkdir(parents=True, exist_ok=True)

    def thumb(item: dict[str, Any], caption: str, relevant: bool | None, badge: str = "") -> Thumb:
        source = run.result.examples_dir / item["thumbnail"]
        if not source.is_file():
            raise CbirError(f"{source} is missing: rerun the benchmark to save its examples")
        shutil.copyfile(source, target / source.name)
        with Image.open(source) as image:
            tiny = image.width < _PIXELATED_BELOW
        path = f"{EXAMPLES_DIR}/{run.slug}/{source.name}"
        return Thumb(path, caption, relevant, badge, pixelated=tiny)

    rows = []
    for query in examples["queries"]:
        badge = "near-duplicate" if query.get("near_duplicate") else ""
        results = [
            thumb(r, f"{rank}. {r.get('label')}", bool(r.get("relevant")))
            for rank, r in enumerate(query["results"], start=1)
        ]
        rows.append((thumb(query, f"query: {query.get('label')}", None, badge), results))
    return ExampleGrid(rows)


def _classification_section(runs: list[_Run]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Classifiers")]
    holding = [run for run in runs if run.result.classification]
    if not holding:
        return blocks + [_absent("No run folder holds classification.json (classifier training).")]
    for run in holding:
        payload = run.result.classification
        rows = [(f"{row['features']} · {row['classifier']}", row, 0) for row in payload["results"]]
        columns = [
            _Column("train accuracy", _get(lambda d: "train_accuracy"), best=False),
            _Column("test accuracy", _get(lambda d: "test_accuracy")),
            _Column("test macro precision", _get(lambda d: "test_macro_precision")),
        ]
        table = _metric_table(rows, columns)
        table.columns[0] = "features · classifier"
        for cells, (_, row, _) in zip(table.rows, rows, strict=True):
            cells.append(Cell(json.dumps(row.get("params", {}), sort_keys=True)))
        table.columns.append("parameters")
        blocks += [Heading(3, f"{run.name} — {payload.get('dataset') or run.metrics['dataset']}")]
        if payload.get("selection"):
            blocks.append(Text(f"Model selection: {payload['selection']}", muted=True))
        blocks.append(table)
    return blocks


def _vocabulary_section(runs: list[_Run], out_dir: Path, written: list[Path]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Visual vocabulary")]
    holding = [run for run in runs if run.result.vocabulary_sweep]
    if not holding:
        return blocks + [_absent("No run folder holds vocabulary_sweep.json (vocabulary sweep).")]
    sweeps = [
        figures.Series(
            run.name,
            run.colour,
            [row["size"] for row in run.result.vocabulary_sweep],
            [row["davies_bouldin"] for row in run.result.vocabulary_sweep],
        )  # fmt: skip
        for run in holding
    ]
    path = figures.vocabulary_sweep(sweeps, out_dir / FIGURES_DIR / "vocabulary-sweep.png")
    written.append(path)
    blocks.append(
        Figure(
            f"{FIGURES_DIR}/{path.name}",
            "Davies-Bouldin index of the k-means vocabulary against its size: lower means "
            "tighter, better separated visual words.",
        )
    )
    for run in holding:
        best = min(row["davies_bouldin"] for row in run.result.vocabulary_sweep)
        rows = [
            [
                Cell(f"{row['size']:g}"),
                Cell(f"{row['davies_bouldin']:.4f}", strong=row["davies_bouldin"] == best),
                Cell(f"{row['inertia']:.4g}"),
            ]
            for row in run.result.vocabulary_sweep
        ]
        blocks += [
            Heading(3, f"Vocabulary sweep — {run.name}"),
            Table(["size", "Davies-Bouldin", "inertia"], rows, {0, 1, 2}),
        ]
    return blocks


def _reading_guide() -> list[Block]:
    return [
        Heading(2, "How to read this report"),
        Bullets(
            [
                "map_cut_k is trec_eval's: precision summed at each relevant rank within the "
                "top k, divided by R, the number of relevant images. With R above k it cannot "
                "reach 1: its ceiling is k / R (0.02 on CIFAR-10, where R = 5,000).",
                "mAP@k normalised divides the same sum by min(R, k) instead: ceiling 1.0, the "
                "figure usually quoted as mAP@100.",
                "P@k: the fraction of the top k that is relevant. nDCG@10: ranking quality of the "
                "top 10, rewarding relevant images near the top. MRR: 1 / rank of the first "
                "relevant result.",
                "map_all: average precision over the full ranking of every index image, the figure "
                "deep-hashing papers report; the precision-recall curve comes from the same pass.",
                "Every measure agrees with trec_eval (pytrec_eval) to 1e-6; the tests prove it.",
                "Timings are wall-clock seconds on the machine that ran each benchmark; compare "
                "them only between runs made on the same machine.",
            ]
        ),  # fmt: skip
    ]
