"""`python -m umi_edge.bench [OPTIONS]` runs the same command as `umi-edge bench [OPTIONS]`."""
import sys

from ..cli import cli

if __name__ == "__main__":
    cli(["bench", *sys.argv[1:]], prog_name="python -m umi_edge.bench")
