import sys

from clipguide.cli import main

sys.exit(main())
