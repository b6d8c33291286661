"""Speed benchmarks: seeded synthetic data, timers, and the search benchmark behind
`cbir bench search`. Quality benchmarks (TREC metrics) live in `cbir.evaluation`."""
