import sys

from capgate_cli import main

sys.exit(main())
