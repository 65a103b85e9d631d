"""On-disk cache of what checks computed, so an interrupted audit resumes.

An entry holds a check's output only: metrics, findings, plots, galleries, details and the seconds
it took. Gates and the status are never stored: the runner evaluates the current plan's
gates on every run, cached or not, so raising a gate can never reuse an old verdict.
An entry is keyed by the sha256 of everything that decides the output (model
fingerprint, data hashes, check name and parameters, seed, assay and torch versions,
device), written atomically (temporary file, then rename) so a kill mid-write leaves no
half-written entry, and validated field by field on read: an entry that does not fit
the schema is logged and recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..results import (CheckOutput, findings_from_json, galleries_from_json, json_safe,
                       metrics_from_json, plots_from_json)

log = logging.getLogger(__name__)

FORMAT = 3  # 1: whole CheckResults with their gates; 2: outputs without galleries
ENTRY_KEYS = ("format", "metrics", "findings", "plots", "details", "seconds", "galleries")


def cache_key(**parts: Any) -> str:
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class ResultCache:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> tuple[CheckOutput, float] | None:
        """The stored output and seconds, or None when absent or invalid (logged)."""
        path = self._path(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as err:
            log.warning("cache entry %s is unreadable (%s); recomputing", path, err)
            return None
        try:
            return entry_from_json(json.loads(text))
        except json.JSONDecodeError as err:
            log.warning("cache entry %s is not valid JSON, probably truncated (%s); "
                        "recomputing", path, err)
        except ValueError as err:
            log.warning("cache entry %s does not fit the cache schema (%s); recomputing",
                        path, err)
        return None

    def put(self, key: str, output: CheckOutput, seconds: float) -> None:
        """Store ``output``; raises OSError or TypeError (details not JSON) like json.dump."""
        entry = {"format": FORMAT, "metrics": output.metrics,
                 "findings": [asdict(f) for f in output.findings],
                 "plots": [asdict(p) for p in output.plots], "details": output.details,
                 "seconds": seconds, "galleries": [asdict(g) for g in output.galleries]}
        text = json.dumps(json_safe(entry), allow_nan=False)
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temp, self._path(key))
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def entry_from_json(raw: Any) -> tuple[CheckOutput, float]:
    """Validate a parsed entry field by field; ValueError names the first bad field."""
    if not isinstance(raw, dict):
        raise ValueError(f"an entry must be an object; got {type(raw).__name__}")
    if raw.get("format") != FORMAT:
        raise ValueError(f"'format' must be {FORMAT}; got {raw.get('format')!r}")
    if set(raw) != set(ENTRY_KEYS):
        raise ValueError(f"the keys must be {list(ENTRY_KEYS)}; got {sorted(raw)}")
    seconds = raw["seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not (
            math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"'seconds' must be a number >= 0; got {seconds!r}")
    if not isinstance(raw["details"], dict):
        raise ValueError(f"'details' must be an object; got {type(raw['details']).__name__}")
    output = CheckOutput(metrics=metrics_from_json(raw["metrics"]),
                         findings=list(findings_from_json(raw["findings"])),
                         plots=list(plots_from_json(raw["plots"])), details=raw["details"],
                         galleries=list(galleries_from_json(raw["galleries"])))
    return output, float(seconds)
