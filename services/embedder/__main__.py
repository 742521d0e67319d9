"""Embedder service entry point: `python services/embedder --repo REPO [...]`.

A thin adapter: everything happens in `bobench.serving.embedder.main` (also reachable as
`python -m bobench.serving.embedder` and `bob serve embedder`).
"""

import sys

from bobench.serving.embedder import main

if __name__ == "__main__":
    sys.exit(main())
