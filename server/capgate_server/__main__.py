import sys

from capgate_server.cli import main

sys.exit(main())
