"""`python -m umi_edge.bench [OPTIONS]` is `umi-edge bench [OPTIONS]`."""
import sys

from ..cli import bench_cmd

if __name__ == "__main__":
    sys.exit(bench_cmd.main(sys.argv[1:], prog_name="python -m umi_edge.bench"))
