"""How long `clipft --help` and each command's `--help` take to start (issue: under 1.5 s on
2 cores). Each is run as a fresh process, the median of --repeat runs; results are written to
benchmarks/results/cli_startup.{json,md}.

    python benchmarks/cli_startup.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
COMMANDS = ["", "zeroshot", "finetune", "probe", "curve", "align", "predict", "audit", "import-labels", "app",
            "report", "demo", "sample-data"]


def seconds(args: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    clipft = shutil.which("clipft") or str(Path(sys.executable).parent / "clipft")
    rows = [{"command": f"clipft {c} --help".replace("  ", " "),
             "seconds": round(seconds([clipft, *([c] if c else []), "--help"], repeat), 3)} for c in COMMANDS]
    info = {"cores": os.cpu_count(), "repeat": repeat, "python": sys.version.split()[0], "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_startup.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = ["| command | seconds (median) |", "|---|---|"] + [f"| `{r['command']}` | {r['seconds']} |" for r in rows]
    (RESULTS / "cli_startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
