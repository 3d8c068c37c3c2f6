"""media-poller entry point: ``python main.py --help``.

The CLI is imported under the ``__main__`` guard on purpose: the metadata parser processes
(`storage.isolation`, anyio worker processes) re-run this file as ``__mp_main__`` when they
start, and should import only what parsing needs, not the whole daemon.
"""

import sys

if __name__ == "__main__":
    from poller.cli import main

    sys.exit(main(sys.argv[1:]))
