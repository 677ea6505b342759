"""The vendored chart library is the pinned npm release, with its licence beside it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[3] / "edge_service" / "static" / "vendor"


def test_vendored_chart_library_matches_its_recorded_release_and_keeps_its_licence() -> None:
    notes = (VENDOR / "README.md").read_text()
    recorded = re.search(r"\*\*sha256\*\*: `([0-9a-f]{64})`", notes)
    assert recorded is not None
    library = (VENDOR / "lightweight-charts.standalone.production.js").read_bytes()
    assert hashlib.sha256(library).hexdigest() == recorded[1]
    assert b"Lightweight Charts" in library[:300] and b"Apache License 2.0" in library[:300]
    assert "Apache License" in (VENDOR / "LICENSE.lightweight-charts").read_text()
