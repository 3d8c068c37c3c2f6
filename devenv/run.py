"""`make run`: the daemon on embedded defaults until Ctrl-C.

Local PostgreSQL under ./.data/pg and local storage under ./.data/artifacts. When no provider
key is set in the environment, the loopback simulator stands in for all three providers so
the daemon has something to talk to; with real keys it talks to the real APIs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack

from devenv.stack import ROOT, daemon_env, database_url, migrate, provider_keys_set, simulator


def main() -> int:
    url = database_url()
    with ExitStack() as stack:
        sim_url = None
        if not provider_keys_set(os.environ):
            sim_url = stack.enter_context(simulator())
            print(f"no provider keys set: using the provider simulator at {sim_url}")
        env = daemon_env(url, sim_url)
        migrate(env)
        print(
            f"DATABASE_URL={url}  (submit jobs with: DATABASE_URL={url} "
            ".venv/bin/python main.py submit --provider replicate --media-type image "
            '--params \'{"model": "black-forest-labs/flux-schnell", "input": '
            '{"prompt": "a cat"}}\')'
        )
        try:
            return subprocess.run([sys.executable, "main.py", "run"], cwd=ROOT, env=env).returncode
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
