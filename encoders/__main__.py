import sys

from encoders.cli import main

sys.exit(main())
