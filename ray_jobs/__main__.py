import sys

from ray_jobs.entrypoint import main

sys.exit(main())
