"""Screenshot of the `umi-edge serve` live page after a real run, taken in headless Chromium.

    python scripts/serve_screenshot.py [--set default] [--query "..."] [-o docs/serve-page.png]

Loads the set, serves it in this process on a free loopback port, opens `/?q=...&run=1` and saves the page
once the run's outcome is shown. Needs the `serve` extra and a Chromium (apt-get install chromium).
"""
from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # the DevTools-over-pipe driver

from headless import Browser, find_chromium  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="default")
    ap.add_argument("--query", default="What is the total population of Denmark, Norway and Ireland?")
    ap.add_argument("-o", "--out", default="docs/serve-page.png")
    ap.add_argument("--width", type=int, default=1100)
    args = ap.parse_args()
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 1
    from umi_edge import Team
    from umi_edge.serve.app import background

    team = Team.load(args.set, progress=True)
    name = team.spec.name
    with background({name: team}) as url, Browser(chromium, width=args.width, height=900) as b:
        b.open(url + "/?" + urllib.parse.urlencode({"q": args.query, "set": name, "run": "1"}))
        status = b.wait_for("document.getElementById('status').dataset.status", timeout=600)
        b.screenshot(args.out)
    print(f"{args.out}: run {status}", file=sys.stderr)
    return 0 if status == "answered" else 1


if __name__ == "__main__":
    sys.exit(main())
