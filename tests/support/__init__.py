"""Helpers for the tests and the benchmark scripts, kept out of the `cbir` package: a real
`cbir serve` child process (`server_process.py`) and a stdlib HTTP client for it
(`http_client.py`). The scripts under benchmarks/ put the repository root on sys.path to
import them."""
