"""The docs name every CRD field and every scaler parameter; an undocumented one fails here.

What counts as documented, read from the prose and tables of a page (fenced code blocks do not
count: an example shows a field, it does not explain it). Only text in backticks is read.

- **CRD spec fields.** Every leaf of the `spec` schema of `crds/*.yaml` (a property with no
  sub-properties: a string, a number, a string map such as `triggers[].metadata`, or a source
  kept as written such as `hashiCorpVault`), by its dotted path under `spec` with array levels
  written `[]` or left out. A leaf is documented on a line of the page when:
  1. the line names its whole path (`scaleTargetRef.envSourceContainerName`,
     `spec.triggers[].authenticationRef.kind`); a span starting with `.` continues the path
     before it on the same line (`scaleTargetRef.apiVersion`, `.kind`, `.name`), or
  2. the line names an ancestor's whole path and every segment below it, the last one either
     by name or, for an enum, by all of its values. This is how a table row documents a nested
     object it describes in a sentence: the `advanced.horizontalPodAutoscalerConfig.behavior`
     row names `scaleUp`, `stabilizationWindowSeconds`, `policies` and `Pods`/`Percent`.
  ScaledObject fields belong in docs/scaledobject.md; TriggerAuthentication and
  ClusterTriggerAuthentication fields in docs/triggerauthentication.md.
- **CRD status fields.** Every property directly under `status`, by name. Their insides are
  not checked: `conditions` entries are the standard Kubernetes condition, `scaleTargetGVKR`
  is group/version/kind/resource, and `health` / `triggersActivity` are maps whose entries the
  status table describes in words.
- **Scaler parameters.** For every built-in scaler (autoscale.scalers.registry.BUILTIN_SCALERS),
  its config dataclass is the type of its constructor's `config` argument; every parameter it
  declares with `param()`, and every alias of one, must appear as a word inside backticks in
  docs/scalers/<type>.md (`tls` counts in `tls: enable`; `password` does not count in
  `passwordFromEnv`).

Nothing is exempted. Should an exemption ever be needed, it goes in EXEMPT below with its
reason, and the test prints it.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscale.scalers.params import Param
from autoscale.scalers.registry import BUILTIN_SCALERS, ScalerRegistry

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
CRDS = REPO / "crds"

# Which page documents the fields of each CRD.
CRD_PAGES: Mapping[str, str] = {
    "scaledobjects.autoscale.dev.yaml": "scaledobject.md",
    "triggerauthentications.autoscale.dev.yaml": "triggerauthentication.md",
    "clustertriggerauthentications.autoscale.dev.yaml": "triggerauthentication.md",
}

# (page, field path or parameter name) -> why it need not be documented. Empty on purpose.
EXEMPT: Mapping[tuple[str, str], str] = {}

Schema = dict[str, Any]
FieldPath = tuple[str, ...]

_FENCE = re.compile(r"^\s*(```|~~~)")
_SPAN = re.compile(r"`([^`\n]+)`")
_SEGMENT = r"[A-Za-z][A-Za-z0-9]*(?:\[[^\]]*\])?"
_PATH = re.compile(rf"\.?{_SEGMENT}(?:\.{_SEGMENT})*")
_INDEX = re.compile(r"\[[^\]]*\]")


# --- reading a page --------------------------------------------------------------------------


@dataclass
class Line:
    """What one line of prose or table names in backticks."""

    paths: set[FieldPath] = field(default_factory=set)  # whole dotted paths, roots stripped
    names: set[str] = field(default_factory=set)  # the last segment of every path
    spans: set[str] = field(default_factory=set)  # every span as written (enum values)


def prose_lines(text: str) -> Iterator[str]:
    """The lines of a Markdown page outside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def read_line(line: str, *, root: str) -> Line:
    """The paths a line names; `root.` (spec or status) is dropped where written."""
    out = Line()
    previous: FieldPath | None = None
    for span in _SPAN.findall(line):
        out.spans.add(span.strip())
        match = _PATH.match(span.strip())
        if match is None:
            continue
        text = _INDEX.sub("", match.group(0))
        if text.startswith("."):
            if previous is None:
                continue
            path = previous[:-1] + tuple(text[1:].split("."))
        else:
            path = tuple(text.split("."))
            if path[0] == root and len(path) > 1:
                path = path[1:]
        previous = path
        out.paths.add(path)
        out.names.add(path[-1])
    return out


def read_page(text: str, *, root: str) -> list[Line]:
    return [read_line(line, root=root) for line in prose_lines(text)]


# --- reading a schema ------------------------------------------------------------------------


def leaves(schema: Schema, path: FieldPath = ()) -> Iterator[tuple[FieldPath, Schema]]:
    """Every leaf property under `schema`, with its path (array levels are transparent)."""
    if schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        yield from leaves(schema["items"], path)
        return
    properties = schema.get("properties")
    if properties:
        for name, sub in properties.items():
            yield from leaves(sub, (*path, name))
    elif path:
        yield path, schema


def documented(path: FieldPath, schema: Schema, lines: list[Line]) -> bool:
    for line in lines:
        if path in line.paths:
            return True
        for depth in range(1, len(path)):
            if path[:depth] not in line.paths:
                continue
            *middle, last = path[depth:]
            enum = [str(v) for v in schema.get("enum", ())]
            last_named = last in line.names or (enum and all(v in line.spans for v in enum))
            if last_named and all(segment in line.names for segment in middle):
                return True
    return False


def undocumented_fields(crd: Schema, page: str) -> list[str]:
    """The spec leaves and top-level status fields of `crd` that `page` does not name."""
    (version,) = crd["spec"]["versions"]
    root = version["schema"]["openAPIV3Schema"]["properties"]
    missing = []
    spec_lines = read_page(page, root="spec")
    for path, schema in leaves(root["spec"]):
        if not documented(path, schema, spec_lines):
            missing.append("spec." + ".".join(path))
    status_lines = read_page(page, root="status")
    for name in root.get("status", {}).get("properties", {}):
        if not any((name,) in line.paths for line in status_lines):
            missing.append(f"status.{name}")
    return missing


# --- reading a scaler ------------------------------------------------------------------------


def config_class(scaler: type) -> type:
    """The config dataclass a scaler is built from: its constructor's `config` argument."""
    annotation = inspect.signature(scaler).parameters["config"].annotation
    if isinstance(annotation, str):
        annotation = getattr(sys.modules[scaler.__module__], annotation)
    assert dataclasses.is_dataclass(annotation), f"{scaler.__name__}: config is not a dataclass"
    return annotation  # type: ignore[return-value]


def parameter_names(config: type) -> list[str]:
    """Every name (and alias) a config dataclass declares with param()."""
    names: list[str] = []
    for f in dataclasses.fields(config):
        for value in f.metadata.values():
            if isinstance(value, Param):
                names.extend((value.name, *value.aliases))
    return names


def named_in_backticks(name: str, text: str) -> bool:
    word = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])")
    return any(word.search(span) for line in prose_lines(text) for span in _SPAN.findall(line))


# --- the tests -------------------------------------------------------------------------------


def _report(kind: str, page: str, missing: list[str]) -> str:
    listed = "\n".join(f"  - {m}" for m in missing)
    return f"{kind} not documented in docs/{page} (add them; see this test's docstring):\n{listed}"


@pytest.mark.parametrize("crd_file", sorted(CRD_PAGES))
def test_every_crd_field_is_documented(crd_file: str) -> None:
    crd = yaml.safe_load((CRDS / crd_file).read_text())
    page = CRD_PAGES[crd_file]
    missing = [
        m for m in undocumented_fields(crd, (DOCS / page).read_text()) if (page, m) not in EXEMPT
    ]
    assert not missing, _report("CRD fields", page, missing)


def test_every_crd_is_checked() -> None:
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(CRD_PAGES)


def test_the_schema_walk_finds_the_fields() -> None:
    """Guard against a vacuous pass: the walk sees nested, array and enum-only fields."""
    crd = yaml.safe_load((CRDS / "scaledobjects.autoscale.dev.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    found = {p for p, _ in leaves(version["schema"]["openAPIV3Schema"]["properties"]["spec"])}
    assert len(found) > 30
    assert ("triggers", "authenticationRef", "kind") in found
    assert ("triggers", "metadata") in found
    behavior = ("advanced", "horizontalPodAutoscalerConfig", "behavior")
    assert (*behavior, "scaleDown", "policies", "periodSeconds") in found


@pytest.mark.parametrize("trigger_type", sorted(BUILTIN_SCALERS))
def test_every_scaler_parameter_is_documented(trigger_type: str) -> None:
    scaler = ScalerRegistry(entry_point_group=None).scaler_class(trigger_type)
    assert isinstance(scaler, type)
    names = parameter_names(config_class(scaler))
    assert names, f"{trigger_type}: no param() fields found"
    page = f"scalers/{trigger_type}.md"
    assert (DOCS / page).is_file(), f"docs/{page} is missing"
    text = (DOCS / page).read_text()
    missing = [
        name
        for name in dict.fromkeys(names)
        if not named_in_backticks(name, text) and (page, name) not in EXEMPT
    ]
    assert not missing, _report("parameters", page, missing)


# --- the checker itself ----------------------------------------------------------------------

TOY_CRD: Schema = {
    "spec": {
        "versions": [
            {
                "schema": {
                    "openAPIV3Schema": {
                        "properties": {
                            "spec": {
                                "properties": {
                                    "ref": {
                                        "properties": {
                                            "name": {"type": "string"},
                                            "kind": {"type": "string", "enum": ["A", "B"]},
                                        }
                                    },
                                    "items": {
                                        "type": "array",
                                        "items": {"properties": {"size": {"type": "integer"}}},
                                    },
                                    "plain": {"type": "string"},
                                }
                            },
                            "status": {"properties": {"seen": {"type": "string"}}},
                        }
                    }
                }
            }
        ]
    }
}


@pytest.mark.parametrize(
    ("page", "missing"),
    [
        ("| `ref.name`, `.kind` | |\n| `items[].size` | |\n`plain`, `seen`", []),
        ("| `spec.ref` | `name`; `A` or `B` |\n| `items.size`, `plain` | `status.seen` |", []),
        (
            "`ref.name`\n`plain`, `items`\n```yaml\nref: {kind: A}\nseen: x\n```",
            ["spec.ref.kind", "spec.items.size", "status.seen"],
        ),
        ("`ref` names `kind`: `A`; `items` `size`\n`name`, `plain`, `seen`", ["spec.ref.name"]),
        (
            "`ref.kind` `A`\n`ref.size`, `plain`, `seen`, `name`",
            ["spec.ref.name", "spec.items.size"],
        ),
    ],
)
def test_the_checker_fails_on_an_undocumented_field(page: str, missing: list[str]) -> None:
    assert undocumented_fields(TOY_CRD, page) == missing


def test_a_parameter_counts_only_as_a_word_in_backticks() -> None:
    text = "`tls: enable` and `passwordFromEnv`; password in prose\n```\n`key`\n```"
    assert named_in_backticks("tls", text)
    assert not named_in_backticks("password", text)
    assert not named_in_backticks("key", text)
