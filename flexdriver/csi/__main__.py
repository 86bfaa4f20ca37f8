import sys

from flexdriver.csi.server import main

sys.exit(main())
