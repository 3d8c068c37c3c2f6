"""The benchmark suite behind `make bench` (DESIGN.md §9); results go to docs/benchmarks.md.

Every benchmark prints ``name: value`` lines as it measures and compares, in the same run and
on the same PostgreSQL, against a peer or a baseline:

* `bench.claim` - claim → no-op poll → write-back throughput, drain and throughput modes,
  against pgqueuer's own ``tools/benchmark.py`` (`bench.pgqueuer_peer`);
* `bench.inflight` - 10,000 active jobs polled every 5 s through the provider simulator:
  poll lateness, polls/s, CPU, peak RSS, database round trips per poll;
* `bench.detect` - provider done → job completed latency at a 1 s poll interval;
* `bench.ingest` - ingest throughput and RSS against ``curl | sha256sum`` (runs the storage
  engineer's ``bench/bench_ingest.py``).

Everything runs on loopback against a PostgreSQL cluster the suite starts under
``bench/.work/`` (git-ignored) with ``pg_stat_statements`` preloaded, and removes afterwards.
"""
