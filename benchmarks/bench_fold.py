"""Raw kafka-python read rate versus the end-to-end fold rate into DuckDB, in one run.

The same measurement as `profile-engine bench fold`: a generated stream (default 1M events)
is published to a fresh topic on PROFILE_ENGINE_BOOTSTRAP_SERVERS (default the local broker),
then a bare kafka-python consumer reads it and the fold consumer folds it into a new DuckDB
file, each in a fresh child process. Prints one JSON object; fold_vs_raw is the fold rate
over the raw read rate of the same run (the issue's target: at least 0.6).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from consumers.bench import run_fold_benchmark
from consumers.consumer import DEFAULT_BATCH_SIZE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    args = parser.parse_args()
    bootstrap = os.environ.get("PROFILE_ENGINE_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    result = run_fold_benchmark(args.events, args.seed, bootstrap, args.batch_size, sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
