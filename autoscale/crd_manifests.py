"""The CustomResourceDefinitions shipped inside the package, for `autoscale crds`.

Reads the YAML files of `autoscale/crds` (a symlink to the repository's `crds/`) through
importlib.resources, so an installed wheel prints exactly what the repository holds. No cluster I/O.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import yaml

CRD_FILES: tuple[str, ...] = (
    "scaledobjects.autoscale.dev.yaml",
    "triggerauthentications.autoscale.dev.yaml",
    "clustertriggerauthentications.autoscale.dev.yaml",
)
"""The CRD files in the order they are printed and applied."""


def _crd_dir() -> Traversable:
    return resources.files("autoscale").joinpath("crds")


def crd_texts() -> list[str]:
    """The text of each CRD file, in CRD_FILES order."""
    directory = _crd_dir()
    return [directory.joinpath(name).read_text(encoding="utf-8") for name in CRD_FILES]


def load_crds() -> list[dict[str, Any]]:
    """Every CRD as a parsed manifest, in CRD_FILES order."""
    crds: list[dict[str, Any]] = []
    for text in crd_texts():
        doc = yaml.safe_load(text)
        if not isinstance(doc, dict):
            raise ValueError("a CRD file does not hold one YAML mapping")
        crds.append(doc)
    return crds


def render_crds() -> str:
    """All CRDs as one multi-document YAML stream, ready for `kubectl apply -f -`."""
    parts = []
    for text in crd_texts():
        parts.append("---\n" + text if not text.startswith("---") else text)
    return "".join(part if part.endswith("\n") else part + "\n" for part in parts)
