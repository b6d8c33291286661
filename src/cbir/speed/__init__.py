"""Speed measurements: seeded synthetic vectors (data.py), timers and meters (measure.py), and
the search benchmark behind `cbir bench search` (search.py).

Named for what it measures, so that three things no longer read alike: this package (how fast;
the CLI command keeps its short name `cbir bench`), `cbir.evaluation.quality_run` (how good the
rankings are: `cbir benchmark`, TREC metrics) and the scripts under benchmarks/ (which use
both and save their figures in benchmarks/results/)."""
