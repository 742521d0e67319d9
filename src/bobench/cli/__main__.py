import sys

from bobench.cli import main

sys.exit(main())
