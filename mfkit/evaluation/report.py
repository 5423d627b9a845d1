"""What an evaluation produced: one row per sampler and step count, the real-vs-real floor, timings."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Sampler names as they appear in rows, tables and JSON.
SAMPLERS = {"meanflow": "MeanFlow", "euler": "Euler"}


@dataclass
class Row:
    """Scores of ``count`` samples drawn with ``steps`` steps each (one network call a step, two with guidance
    at sampling time: the report's ``info["guidance"]``) by ``sampler`` ("meanflow":
    z_r = z_t - (t - r) u(z_t, r, t); "euler": u(z_t, t, t)), and the wall time per sample in milliseconds
    of the network (all steps) and of the modality's decoding, measured apart."""

    sampler: str
    steps: int
    metrics: dict[str, float]
    network_ms: float
    decode_ms: float

    @property
    def key(self) -> str:
        """'mf1', 'euler32', ...: how the row is named in flat metric names."""
        return f"{'mf' if self.sampler == 'meanflow' else 'euler'}{self.steps}"


@dataclass
class EvalReport:
    """Everything `mfkit eval` prints and ``--json`` writes.

    ``directions``: metric -> "lower" or "higher" (which way is better). ``floor``: the same metrics for
    ``floor_count`` real training items against the same reference, the best a perfect model can
    expect at this sample size (None when not computed). ``reference_count``: real "val" items scored against.
    """

    evaluator: str
    directions: dict[str, str]
    count: int
    seed: int
    reference_count: int
    rows: list[Row] = field(default_factory=list)
    floor: dict[str, float] | None = None
    floor_count: int = 0
    cond: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def row(self, sampler: str, steps: int) -> Row:
        for row in self.rows:
            if row.sampler == sampler and row.steps == steps:
                return row
        raise KeyError(f"no row for {sampler} with {steps} step(s)")

    def flat(self, prefix: str = "eval/") -> dict[str, float]:
        """{'eval/mf1/sliced_w2': ..., 'eval/mf1/network_ms': ...}: one number per name, for metrics logs."""
        values: dict[str, float] = {}
        for row in self.rows:
            values.update({f"{prefix}{row.key}/{name}": value for name, value in row.metrics.items()})
            values[f"{prefix}{row.key}/network_ms"] = row.network_ms
        return values

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": [asdict(row) for row in self.rows]}

    def write_json(self, path: Path) -> Path:
        """Standard JSON (readable by jq and browsers): a NaN or infinite figure (e.g. the accuracy of
        unconditional samples) is written as null."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_finite_or_null(self.to_dict()), indent=2, default=str, allow_nan=False) + "\n")
        return path


def _finite_or_null(value: Any) -> Any:
    """``value`` with every non-finite float inside it (dicts, lists, tuples) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


def format_value(value: float) -> str:
    """Four significant digits, in plain or scientific notation by size."""
    if not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.3e}"
