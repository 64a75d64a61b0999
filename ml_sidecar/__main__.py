import sys

from ml_sidecar.runner import main

sys.exit(main())
