"""The twin's calibration profiles (JSON, versioned in the repo) and their reader.

``bandwidth.json``: the Bandwidth Manager's rate model (schema in
:mod:`twin.model.calibration`), written by ``make calibrate-bandwidth``.
"""
from __future__ import annotations

import json
from pathlib import Path

from twin.model.calibration import BandwidthProfile, CalibrationError, parse_bandwidth_profile

CALIBRATION_DIR = Path(__file__).resolve().parent
BANDWIDTH_PROFILE = CALIBRATION_DIR / "bandwidth.json"

__all__ = ["BANDWIDTH_PROFILE", "CALIBRATION_DIR", "load_bandwidth_profile"]


def load_bandwidth_profile(path: str | Path | None = None) -> BandwidthProfile:
    """Read a bandwidth calibration profile (default: the repo's ``twin/calibration/bandwidth.json``)."""
    p = Path(path) if path is not None else BANDWIDTH_PROFILE
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"{p}: no such calibration profile (make calibrate-bandwidth writes it)") from None
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{p}: cannot be read as JSON: {exc}") from None
    return parse_bandwidth_profile(data, str(p))
