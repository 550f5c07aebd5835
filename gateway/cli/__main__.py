import sys

from gateway.cli import main

if __name__ == "__main__":  # not when a `serve --workers` worker re-imports the main module
    sys.exit(main())
