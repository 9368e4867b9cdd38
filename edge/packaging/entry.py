"""The one-file binary's entry point: ``facelink-edge`` (facelink.edge.cli) with its arguments."""
import sys

from facelink.edge.cli import main

if __name__ == "__main__":
    sys.exit(main())
