"""What a benchmark found, and the lines printed for it: one ``BENCH`` line, then details.

Owns the output format (docs/benchmarks.md): ``BENCH name: value unit  ratio=X.XX (floor:
what=value unit)``, followed on the same line by each target as ``met ...`` or ``MISSED target
...``, and detail lines indented by two spaces. Also the machine header.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import florasync


@dataclass(frozen=True, slots=True)
class Floor:
    """What the value is compared with: ``ratio = value / floor.value``."""

    what: str
    value: float
    unit: str


@dataclass(frozen=True, slots=True)
class Target:
    """One promise of the benchmark, and whether this run kept it."""

    text: str
    met: bool

    def verdict(self) -> str:
        return f"met {self.text}" if self.met else f"MISSED target {self.text}"


@dataclass
class Result:
    """One benchmark's outcome: the headline value, its floor, its targets and the details."""

    name: str
    value: float
    unit: str
    floor: Floor
    targets: list[Target] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.value / self.floor.value if self.floor.value else float("inf")

    @property
    def met(self) -> bool:
        return all(t.met for t in self.targets)

    def lines(self) -> list[str]:
        verdicts = "; ".join(t.verdict() for t in self.targets)
        head = (
            f"BENCH {self.name}: {number(self.value)} {self.unit}  ratio={self.ratio:.2f} "
            f"(floor: {self.floor.what}={number(self.floor.value)} {self.floor.unit})"
        )
        return [f"{head}  {verdicts}" if verdicts else head, *(f"  {d}" for d in self.details)]


def number(value: float) -> str:
    """Three significant digits (whole numbers from 100 up)."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def machine_header() -> str:
    """``# machine: ...``: where and when the numbers were taken."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"# machine: nproc={os.cpu_count()}, cpu={cpu_model()}, kernel={platform.release()}, "
        f"python={platform.python_version()}, florasync={florasync.__version__} "
        f"({source_revision()}), date={now}, "
        f"loadavg={load}"
    )


def source_revision() -> str:
    """The git commit of the florasync being measured, ``+dirty`` with uncommitted changes."""
    repo = Path(florasync.__file__).resolve().parent.parent
    git = ["git", "-C", str(repo)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"git {head}{'+dirty' if dirty else ''}"


def cpu_model() -> str:
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
