import sys

from feda2v_flwr.export import main

sys.exit(main())
