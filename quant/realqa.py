"""The built-in real-text QA set (assets/realqa.json) and its split by passage.

"calibration": the even passages (12 of 24): static INT8 may be calibrated and recipes tuned on them.
"held-out": the odd passages: never calibrated or tuned on. Kept apart from evaluate.py so that static.py
(which calibrates) and evaluate.py (which scores) read the same split without importing each other.
"""

from __future__ import annotations

import json
from pathlib import Path

BUILTIN = Path(__file__).resolve().parents[1] / "assets" / "realqa.json"
SPLITS = ("calibration", "held-out")


def paragraphs(part: str | None = None) -> list[dict]:
    """The SQuAD-format paragraphs of the set; all of them, or one half of the split."""
    if part is not None and part not in SPLITS:
        raise ValueError(f"part must be one of {', '.join(SPLITS)}; got {part!r}")
    data = json.loads(BUILTIN.read_text(encoding="utf-8"))
    paras = [p for a in data["data"] for p in a["paragraphs"]]
    if part is None:
        return paras
    return [p for i, p in enumerate(paras) if (i % 2 == 0) == (part == "calibration")]
