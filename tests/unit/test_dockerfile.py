"""The Dockerfile, without a Docker engine: its essentials, and its install steps for real.

No Docker engine runs here or in CI, so the image is never built in tests. Instead:

- the Dockerfile is parsed and its essentials checked (a base image pinned by version and
  digest, a numeric non-root USER, `autoscale` as ENTRYPOINT with `run` as CMD, no ADD of
  remote URLs, nothing written outside /tmp at run time, the operator's ports exposed);
- the build context that .dockerignore lets through is computed with Docker's rules;
- the builder stage's COPY, ENV and RUN steps are replayed in a temporary directory with a
  fresh virtual environment standing in for /opt/autoscale: the same pip install, and the
  same smoke checks; then the final stage's entrypoint runs with the final stage's
  environment and must not write a single file into the installed environment (the root
  filesystem is read-only in the Deployment).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import autoscale
from autoscale import cli, crd_manifests

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
VENV_IN_IMAGE = "/opt/autoscale"


# --- a small Dockerfile parser ------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined; comment lines dropped (as Docker
    does, also inside a continuation)."""
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            yield current.strip()
        current = ""
    if current.strip():
        yield current.strip()


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults, and the stages with FROM's ${ARG}s substituted."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(
                r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], words[0]
            )
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif keyword == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append(Instruction(keyword, rest))
    return args, stages


def parse_env(args: str, environ: dict[str, str]) -> dict[str, str]:
    """ENV KEY=VALUE ... with ${VAR}/$VAR expanded from `environ` (and earlier pairs)."""
    result: dict[str, str] = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        assert sep, f"ENV in the legacy `ENV KEY VALUE` form: {args}"
        scope = {**environ, **result}
        result[key] = re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m, scope=scope: scope.get(m.group(1) or m.group(2), ""),
            value,
        )
    return result


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    return [str(v) for v in value]


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(dockerfile: tuple[dict[str, str], list[Stage]]) -> Stage:
    return dockerfile[1][-1]


@pytest.fixture(scope="module")
def builder(dockerfile: tuple[dict[str, str], list[Stage]]) -> Stage:
    stages = dockerfile[1]
    assert len(stages) >= 2, "a multi-stage build: a builder and a final stage"
    named = {s.name: s for s in stages if s.name}
    assert "builder" in named
    return named["builder"]


# --- .dockerignore, with Docker's matching rules ---------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "$")


def dockerignore_rules() -> list[tuple[bool, str, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negated, pattern, _pattern_regex(pattern)))
    return rules


def excluded(relative: str, rules: list[tuple[bool, str, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path, or one of its parent directories,
    decides; a `!` pattern re-includes."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negated, _, regex in rules:
        if any(regex.match(c) for c in candidates):
            result = not negated
    return result


def build_context() -> list[str]:
    """Every file of the checkout that .dockerignore sends to the builder (relative paths)."""
    rules = dockerignore_rules()
    reincluded = [p for negated, p, _ in rules if negated]
    files: list[str] = []
    for root, dirs, names in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        rel_root = "" if rel_root == "." else rel_root + "/"
        kept = []
        for d in dirs:
            rel = rel_root + d
            if excluded(rel, rules) and not any(p.startswith(rel + "/") for p in reincluded):
                continue
            if (Path(root) / d).is_symlink():  # sent as a link, not followed
                files.append(rel)
                continue
            kept.append(d)
        dirs[:] = kept
        for name in names:
            rel = rel_root + name
            if not excluded(rel, rules):
                files.append(rel)
    return sorted(files)


# --- the essentials ----------------------------------------------------------------------------


def test_every_stage_uses_a_python_base_pinned_by_exact_version_and_digest(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    """A tag can move; `python:X.Y.Z-slim-<debian>@sha256:<digest>` cannot."""
    _, stages = dockerfile
    names = {s.name for s in stages if s.name}
    bases = [s.base for s in stages if s.base not in names]
    assert bases, "no external base image"
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}", base), (
            f"base image not pinned to an exact Python 3.11 patch release and digest: {base}"
        )
    assert len(set(bases)) == 1, "builder and final stage must share one base (the venv's python)"


def test_the_final_stage_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "the final stage sets no USER: it would run as root"
    user, _, group = users[-1].args.partition(":")
    assert user.isdigit(), "USER must be numeric, so runAsNonRoot can verify it"
    assert int(user) != 0, "USER must not be root"
    assert not group or (group.isdigit() and int(group) != 0)


def test_entrypoint_is_autoscale_and_the_default_command_is_run(final: Stage) -> None:
    assert exec_form(final.all("ENTRYPOINT")[-1].args) == ["autoscale"]
    assert exec_form(final.all("CMD")[-1].args) == ["run"]


def test_nothing_is_fetched_from_a_url_by_the_dockerfile(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    """No ADD at all (COPY only), and no RUN downloads outside pip's registry."""
    _, stages = dockerfile
    for stage in stages:
        assert not stage.all("ADD"), "use COPY; ADD can fetch remote URLs and unpack archives"
        for run in stage.all("RUN"):
            assert not re.search(r"\b(curl|wget)\b|https?://", run.args), run.args


def test_the_final_stage_is_the_virtual_environment_and_nothing_else(final: Stage) -> None:
    """No package manager runs in the final stage; it only receives /opt/autoscale."""
    assert not final.all("RUN")
    copies = final.all("COPY")
    assert [c.args for c in copies] == [f"--from=builder {VENV_IN_IMAGE} {VENV_IN_IMAGE}"]


def test_the_runtime_environment_writes_only_under_tmp(final: Stage) -> None:
    env: dict[str, str] = {}
    for instruction in final.all("ENV"):
        env.update(parse_env(instruction.args, env))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"].startswith("/tmp")
    assert env["TMPDIR"].startswith("/tmp")
    assert env["PATH"].split(":")[0] == f"{VENV_IN_IMAGE}/bin"
    assert final.all("WORKDIR")[-1].args == "/tmp"
    assert not final.all("VOLUME"), "the Deployment mounts an emptyDir at /tmp itself"


def test_the_exposed_ports_are_the_operators_defaults(final: Stage) -> None:
    run = cli.build_parser().parse_args(["run"])
    exposed = {int(p.split("/")[0]) for e in final.all("EXPOSE") for p in e.args.split()}
    assert exposed == {run.metrics_port, run.health_port} == {8080, 8081}


# --- the build context -------------------------------------------------------------------------


def test_dockerignore_sends_only_what_the_build_needs() -> None:
    context = build_context()
    tops = {path.split("/")[0] for path in context}
    assert tops == {"pyproject.toml", "README.md", "crds", "autoscale"}, tops
    assert not [p for p in context if "__pycache__" in p or p.endswith(".pyc")]
    # Every CRD and every module of the package goes in.
    for crd in crd_manifests.CRD_FILES:
        assert f"crds/{crd}" in context
    modules = {str(p.relative_to(REPO)) for p in (REPO / "autoscale").rglob("*.py")}
    modules = {m for m in modules if "__pycache__" not in m}
    assert modules <= set(context)


def test_dockerignore_matching_follows_dockers_rules() -> None:
    """The matcher the other tests rely on: last match wins, parents count, `!` re-includes."""
    rules = [
        (False, "*", _pattern_regex("*")),
        (True, "src", _pattern_regex("src")),
        (False, "**/__pycache__", _pattern_regex("**/__pycache__")),
    ]
    assert excluded("tests/x.py", rules)
    assert not excluded("src/a/b.py", rules)
    assert excluded("src/a/__pycache__/b.pyc", rules)


# --- the install steps, for real -----------------------------------------------------------------


def _snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture(scope="module")
def image_venv(builder: Stage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder stage replayed: COPY from the filtered context, ENV, WORKDIR, RUN.

    /opt/autoscale becomes a temporary directory, `python` is this interpreter's base Python
    (3.11, as in the image), and pip may use the machine's cache (PIP_NO_CACHE_DIR is dropped:
    it only keeps the image small). Everything else runs as written.
    """
    root = tmp_path_factory.mktemp("image")
    venv = root / "opt-autoscale"
    workdir = root / "src"
    shims = root / "shims"
    shims.mkdir()
    base_python = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    (shims / "python").symlink_to(base_python)
    context = set(build_context())

    env = {
        "PATH": f"{shims}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", str(root)),
        "LANG": "C.UTF-8",
    }
    cwd = root
    for instruction in builder.instructions:
        args = instruction.args.replace(VENV_IN_IMAGE, str(venv))
        if instruction.keyword == "ENV":
            env.update(parse_env(args, env))
            env.pop("PIP_NO_CACHE_DIR", None)
        elif instruction.keyword == "WORKDIR":
            assert args == "/src"
            cwd = workdir
            cwd.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            *sources, destination = args.split()
            assert not any(s.startswith("--") for s in sources), args
            for source in sources:
                source = source.rstrip("/")
                sent = [p for p in context if p == source or p.startswith(source + "/")]
                assert sent, f"COPY {source}: not in the build context (.dockerignore)"
                if (REPO / source).is_dir():  # its contents go into the destination directory
                    target_dir = cwd / destination
                    pairs = [(rel, target_dir / rel[len(source) + 1 :]) for rel in sent]
                else:
                    to_dir = destination.endswith("/")
                    target = cwd / destination / source if to_dir else cwd / destination
                    pairs = [(source, target)]
                for rel, path in pairs:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    origin = REPO / rel
                    if origin.is_symlink():  # sent as a link (autoscale/crds -> ../crds)
                        path.symlink_to(os.readlink(origin))
                    else:
                        shutil.copy2(origin, path)
        elif instruction.keyword == "RUN":
            result = subprocess.run(
                ["/bin/sh", "-c", args],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            assert result.returncode == 0, (
                f"RUN {args}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n"
                f"{result.stderr[-4000:]}"
            )
        else:
            pytest.fail(f"the replay does not know {instruction.keyword}; teach it")
    return venv


@pytest.fixture(scope="module")
def runtime_env(final: Stage, image_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("tmp")
    env: dict[str, str] = {}
    for instruction in final.all("ENV"):
        env.update(parse_env(instruction.args.replace(VENV_IN_IMAGE, str(image_venv)), env))
    env["HOME"] = env["TMPDIR"] = str(tmp)  # /tmp, the Deployment's emptyDir
    env["LANG"] = "C.UTF-8"
    return env


def _entrypoint(final: Stage, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = exec_form(final.all("ENTRYPOINT")[-1].args)
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable is not None, f"{command[0]} is not on the image's PATH"
    return subprocess.run(
        [executable, *command[1:], *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_installed_environment_has_the_project_and_no_pip(image_venv: Path) -> None:
    site = next((image_venv / "lib").glob("python3.*/site-packages"))
    assert (site / "autoscale" / "__init__.py").is_file(), "not installed non-editable"
    assert not list(site.glob("__editable__*")), "an editable install would need the checkout"
    assert not (image_venv / "bin" / "pip").exists()
    assert not (site / "pip").exists()
    # Bytecode compiled at build time: nothing needs writing at run time.
    assert list((site / "autoscale" / "__pycache__").glob("*.cpython-311.pyc"))


def test_the_entrypoint_prints_the_version_and_the_crds(
    final: Stage, runtime_env: dict[str, str]
) -> None:
    version = _entrypoint(final, runtime_env, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"autoscale {autoscale.__version__}"
    crds = _entrypoint(final, runtime_env, "crds")
    assert crds.returncode == 0, crds.stderr
    assert crds.stdout == crd_manifests.render_crds(), "the image's CRDs differ from crds/"


def test_running_writes_nothing_into_the_image(
    final: Stage, runtime_env: dict[str, str], image_venv: Path
) -> None:
    """The root filesystem is read-only in the Deployment: importing everything `run` imports
    (the app and every scaler) must not try to write, e.g. bytecode, into /opt/autoscale."""
    before = _snapshot(image_venv)
    python = str(image_venv / "bin" / "python")
    code = (
        "import autoscale.app, autoscale.cli, autoscale.scalers.registry as r\n"
        "reg = r.default_registry()\n"
        "assert not reg.problems(), reg.problems()\n"
    )
    result = subprocess.run(
        [python, "-c", code], env=runtime_env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    help_text = _entrypoint(final, runtime_env, "run", "--help")
    assert help_text.returncode == 0
    assert "--leader-elect" in help_text.stdout
    assert _snapshot(image_venv) == before
