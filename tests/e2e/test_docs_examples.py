"""Every YAML example in the docs passes server-side dry run on the bench's kube-apiserver, and
every PromQL example runs on the bench's Prometheus, so the docs cannot drift from the CRDs.

The examples are the fenced blocks of README.md, CONTRIBUTING.md and docs/**/*.md:

- ```yaml``` (or ```yml```) blocks must hold complete Kubernetes objects (`apiVersion` and
  `kind`). Each block is applied with `kubectl apply --dry-run=server --validate=strict` into a
  fresh namespace, after our CRDs are installed: the API server checks the schema, the CEL
  rules and unknown fields (a misspelt field fails), and runs admission. A `metadata.namespace`
  in an example is replaced by the test's namespace; cluster-scoped objects stay as written.
- A block that is not complete objects (a `triggers:` excerpt, Helm values, a rule file) must
  say so: the line right above its opening fence is `<!-- fragment -->`. A fragment must still
  parse as YAML; its complete objects are applied as above, and each document whose keys are
  all ScaledObject spec fields (such as a `triggers:` list) is wrapped into a ScaledObject and
  applied too, so trigger excerpts are checked against the schema (metadata values must be
  strings, and so on). A block marked as a fragment that holds only complete objects fails:
  remove the marker.
- Objects of kinds whose CRDs the bench does not install are skipped, each kind with its
  reason in SKIPPED_KINDS; a block that holds nothing else is reported as skipped.
- ```promql``` blocks hold one query per line (`#` lines are comments); each runs as an
  instant query against the bench's Prometheus, which must accept it.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Prometheus

pytestmark = pytest.mark.testbed

REPO = Path(__file__).resolve().parents[2]
FRAGMENT = "<!-- fragment -->"
YAML_LANGUAGES = {"yaml", "yml"}

# (API group, kind) -> why examples of it are not applied here.
SKIPPED_KINDS: dict[tuple[str, str], str] = {
    ("monitoring.coreos.com", "ServiceMonitor"): (
        "the Prometheus Operator's CRD, not installed on the bench"
    ),
    ("monitoring.coreos.com", "PrometheusRule"): (
        "the Prometheus Operator's CRD, not installed on the bench"
    ),
    ("kustomize.config.k8s.io", "Kustomization"): (
        "a kustomization.yaml is kustomize's input, not an API object"
    ),
}

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    fragment: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def doc_files() -> list[Path]:
    return [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(path: Path) -> Iterator[Block]:
    """The fenced code blocks of a Markdown file (indented ones, in list items, included)."""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opened = _OPEN.match(lines[i])
        if opened is None:
            i += 1
            continue
        indent, fence = len(opened["indent"]), opened["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        body = []
        j = i + 1
        while j < len(lines) and not closing.match(lines[j]):
            body.append(lines[j][indent:] if lines[j][:indent].isspace() else lines[j])
            j += 1
        assert j < len(lines), f"{path.relative_to(REPO)}:{i + 1}: unclosed code fence"
        yield Block(
            path=path,
            line=i + 1,
            language=opened["info"].lower(),
            text="\n".join(body) + "\n",
            fragment=i > 0 and lines[i - 1].strip() == FRAGMENT,
        )
        i = j + 1


def all_blocks(languages: set[str]) -> list[Block]:
    return [b for path in doc_files() for b in blocks(path) if b.language in languages]


YAML_BLOCKS = all_blocks(YAML_LANGUAGES)
PROMQL_BLOCKS = all_blocks({"promql"})


def is_object(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def scaled_object_spec_fields() -> set[str]:
    crd = yaml.safe_load((REPO / "crds" / "scaledobjects.autoscale.dev.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    return set(version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])


def wrap(spec: dict[str, Any], index: int) -> dict[str, Any]:
    """A spec excerpt as a complete ScaledObject."""
    return {
        "apiVersion": "autoscale.dev/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": f"docs-fragment-{index}"},
        "spec": {"scaleTargetRef": {"name": "docs-example"}, **spec},
    }


def skip_reason(obj: dict[str, Any]) -> str | None:
    group = str(obj["apiVersion"]).rpartition("/")[0]
    return SKIPPED_KINDS.get((group, str(obj["kind"])))


def objects_to_apply(block: Block) -> tuple[list[dict[str, Any]], list[str]]:
    """The objects a block asks to dry-run, and the skips (with reasons) among them."""
    try:
        docs = [d for d in yaml.safe_load_all(block.text) if d is not None]
    except yaml.YAMLError as exc:
        pytest.fail(f"{block.where}: not valid YAML: {exc}")
    assert docs, f"{block.where}: an empty YAML block"
    objects = [d for d in docs if is_object(d)]
    rest = [d for d in docs if not is_object(d)]
    if not block.fragment:
        assert not rest, (
            f"{block.where}: {len(rest)} document(s) without apiVersion and kind; complete "
            f"them into objects, or put {FRAGMENT} on the line above the fence"
        )
    elif not rest:
        pytest.fail(f"{block.where}: marked as a fragment but holds complete objects only")
    spec_fields = scaled_object_spec_fields()
    for index, doc in enumerate(rest):
        if isinstance(doc, dict) and doc and set(doc) <= spec_fields:
            objects.append(wrap(doc, index))
    applied, skipped = [], []
    for obj in objects:
        reason = skip_reason(obj)
        if reason is None:
            applied.append(obj)
        else:
            skipped.append(f"{obj['kind']}: {reason}")
    return applied, skipped


def in_namespace(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy without metadata.namespace (the test's namespace is given to kubectl)."""
    copy: dict[str, Any] = json.loads(json.dumps(obj))
    copy.setdefault("metadata", {}).pop("namespace", None)
    return copy


def test_the_docs_have_examples() -> None:
    """Guard against a vacuous pass: the known examples are found, fragments are marked."""
    found = {b.where for b in YAML_BLOCKS}
    assert any(w.startswith("docs/quickstart.md:") for w in found)
    assert any(w.startswith("docs/scaledobject.md:") for w in found)
    assert any(b.fragment for b in YAML_BLOCKS)
    assert PROMQL_BLOCKS


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=lambda b: b.where)
def test_yaml_example_passes_server_side_dry_run(
    block: Block, crds: KubeAPIServer, namespace: str
) -> None:
    objects, skipped = objects_to_apply(block)
    if not objects:
        if skipped:
            pytest.skip(f"{block.where}: {'; '.join(skipped)}")
        return  # a fragment with nothing to apply: parsing it was the check
    result = crds.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump_all([in_namespace(o) for o in objects], sort_keys=False),
        check=False,
    )
    assert result.returncode == 0, (
        f"{block.where}: kubectl apply --dry-run=server failed:\n{result.stderr.strip()}"
    )


def promql_queries(block: Block) -> list[str]:
    return [
        line.strip()
        for line in block.text.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


@pytest.mark.parametrize("block", PROMQL_BLOCKS, ids=lambda b: b.where)
def test_promql_example_runs_on_prometheus(block: Block, prometheus: Prometheus) -> None:
    queries = promql_queries(block)
    assert queries, f"{block.where}: an empty PromQL block"
    for query in queries:
        url = f"{prometheus.url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:
            answer = json.load(exc)
        assert answer.get("status") == "success", (
            f"{block.where}: Prometheus refused {query!r}: {answer.get('error')}"
        )


# --- the extractor itself -------------------------------------------------------------------


def test_blocks_are_found_with_their_marker_and_indentation(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n"
        "```yaml\na: 1\n```\n"
        "<!-- fragment -->\n"
        "```yaml\ntriggers: []\n```\n"
        "1. step\n\n"
        "   ```sh\n   echo hi\n     indented\n   ```\n"
        "````md\n```yaml\nnot: a block\n```\n````\n"
    )
    found = [(b.line, b.language, b.text, b.fragment) for b in blocks(page)]
    assert found == [
        (2, "yaml", "a: 1\n", False),
        (6, "yaml", "triggers: []\n", True),
        (11, "sh", "echo hi\n  indented\n", False),
        (15, "md", "```yaml\nnot: a block\n```\n", False),
    ]
