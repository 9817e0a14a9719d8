"""Every command line the README shows runs as written (those that can run without Azure), against real
Azurite and the sandboxes; the others are classified on purpose, so a new one cannot slip in untested."""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from devtools.images import jpeg
from shared.app.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
# The README and the guides it links to (docs/deploy.md holds the deploy's commands).
README = "\n".join(path.read_text(encoding="utf-8") for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
pytestmark = pytest.mark.timeout(300)

# How each command is proven, first match wins. "run": runs as written and exits 0. "parse": has a
# placeholder (<...>, ID), so its options are checked by the real parser. "exists": a path to a program.
RULES = [
    (r"^source \.venv/bin/activate$", "run"),
    (r"^image-sync$", "exists"),  # the program's name, installed into the venv
    (r"^image-sync .*(<|\bID\b)", "parse"),
    (r"^image-sync( |$)", "run"),
    (r"^\./scripts/test\.sh", "ci"),  # the README's test command is what .ci/run runs: it would recurse here
    (r"^\./scripts/demo\.sh --keep-running$", "keep-running"),
    (r"^\./scripts/(demo|setup)\.sh( --dry-run)?$", "run"),
    (r"^(\.venv/bin/image-sync|deploy/deploy\.sh|deploy/teardown\.sh)$", "exists"),
    (r"^deploy/deploy\.sh --help$", "run"),
    (r"^deploy/deploy\.sh --plan$", "azure"),  # reads a subscription
    (r"^(\.venv/bin/)?python -m bench( |$)|^python -m bench\.(burst|redaction|history)$", "slow"),  # minutes; test_bench runs it small
    (r"^python -m devtools\.sandboxes$", "service"),
    (r"^jq ", "run"),
    (r"^(cp local\.settings\.json\.example|npx azurite|\.venv/bin/python -m devtools\.sandboxes &|func start)",
     "core-tools"),  # the "func start" recipe: Core Tools cannot be installed here
    (r"(^az |^curl |<|\.\.\.|--env-file deploy/deploy\.env|^read -rs|^(host|key|blob)=|^export |"
     r"^cp deploy/deploy\.env\.example|^  -H |^app_id=)", "azure"),  # needs an Azure subscription and az login
]
INLINE = re.compile(r"^(\./scripts/\S+|image-sync( |$)|\.venv/bin/\S+|deploy/\w+\.sh|python -m \S+|jq )")


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line:
                commands.append(line)
    for span in re.findall(r"`([^`\n]+)`", README):
        if INLINE.match(span) and span not in commands:
            commands.append(span)
    return commands


def how(command: str) -> str | None:
    return next((kind for pattern, kind in RULES if re.search(pattern, command)), None)


def test_every_readme_command_is_classified():
    commands = readme_commands()
    assert len(commands) > 30
    unknown = [c for c in commands if how(c) is None]
    assert unknown == [], f"classify these README commands in tests/test_readme_commands.py: {unknown}"


@pytest.mark.parametrize("command", [c for c in readme_commands() if how(c) == "parse"])
def test_commands_with_placeholders_parse(command):
    words = [w for w in re.sub(r"<[^>]+>|\bID\b", "100001", command).split()[1:]]
    build_parser().parse_args(words)


@pytest.mark.parametrize("command", [c for c in readme_commands() if how(c) == "exists"])
def test_named_programs_exist(command):
    path = ".venv/bin/image-sync" if command == "image-sync" else command
    assert os.access(REPO / path, os.X_OK), command


@pytest.fixture
def workdir(sync_env, container):
    """The checkout, as the README's reader has it, and settings pointing at Azurite and the sandboxes,
    holding product 100001 (the README's example item). The report and the contact sheet the README writes
    are removed after."""
    report, sheet = REPO / "run.json", REPO / "sheet.html"
    assert not report.exists(), "run.json is in the checkout already"
    assert not sheet.exists(), "sheet.html is in the checkout already"
    for kind in ("front", "back"):
        container.upload_blob(f"100001/BLK/{kind}.jpg", jpeg(note=kind))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGES_", "WALLIE_", "TRAEDE_", "VIRTUAL_ENV"))}
    env.update(sync_env)
    env["SYNC_STATE_CONTAINER"] = f"state-{container.container_name[-8:]}"
    env["RUN_HISTORY_CONTAINER"] = f"runs-{container.container_name[-8:]}"  # this test's runs only
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    yield REPO, env
    report.unlink(missing_ok=True)
    sheet.unlink(missing_ok=True)


def bash(command: str, cwd: Path, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_every_runnable_readme_command_runs_as_written(workdir, wallie, traede):
    cwd, env = workdir
    runs = [c for c in readme_commands() if how(c) == "run" and c != "source .venv/bin/activate"]
    assert any(c.startswith("image-sync sync") for c in runs) and any(c.startswith("./scripts/demo.sh") for c in runs)
    # the CLI lines follow `source .venv/bin/activate` in the README: that is how they run here
    # the jq example reads the report, and the run history shows the syncs: they run after the syncs
    ordered = sorted(runs, key=lambda c: (c.startswith(("jq ", "image-sync runs")), c))
    for command in ordered:
        prefix = "source .venv/bin/activate && " if command.startswith("image-sync") else ""
        if command.startswith("jq ") and not shutil.which("jq"):
            report = json.loads((cwd / "run.json").read_text())
            assert [p for p in report["sent"]["traede"] if p["item"] == "100001"], "the jq example finds nothing"
            continue
        result = bash(prefix + command, cwd, env)
        assert result.returncode == 0, f"{command!r} exited {result.returncode}:\n{result.stderr[-2000:]}"
        if command.startswith("jq "):
            assert '"item": "100001"' in result.stdout and "sig=" not in result.stdout
    assert "100001" in traede.products and len(traede.products["100001"]) == 2
    sheet = (cwd / "sheet.html").read_text(encoding="utf-8")
    assert "Contact sheet: product 100001" in sheet or "Contact sheet: run" in sheet


def test_the_cli_runs_outside_the_repository_without_the_venv_on_path(workdir, wallie, traede):
    cwd, env = workdir
    elsewhere = Path(tempfile.mkdtemp())
    result = bash(f"{cwd}/.venv/bin/image-sync sync --item 100001", elsewhere, env)
    assert result.returncode == 0, result.stderr
    assert len(traede.products["100001"]) == 2


def _azurite_dirs_of_group(pgid):
    """The Azurite folders the processes of one process group hold open (the demo's Python keeps
    Azurite's log open): tells the demo's folder from those of other test workers."""
    root = os.path.join(tempfile.gettempdir(), "azurite-")
    dirs = set()
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            if int(Path(stat).read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for fd in glob.glob(os.path.join(os.path.dirname(stat), "fd", "*")):
                target = os.readlink(fd)
                if target.startswith(root):
                    dirs.add(target[:target.index("/", len(root))] if "/" in target[len(root):] else target)
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
    return dirs


def test_demo_keep_running_prints_commands_that_run_as_printed_and_sigterm_cleans_up(workdir, tmp_path):
    cwd, env = workdir
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "azurite-*")))
    demo = subprocess.Popen(["./scripts/demo.sh", "--keep-running"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    printed, pasted = [], []
    deadline = time.monotonic() + 240
    for line in demo.stdout:
        printed.append(line)
        if line.startswith("  export ") or line.strip().startswith(str(REPO)):
            pasted.append(line.strip())
        if "stops it." in line or time.monotonic() > deadline:
            break
    assert pasted and any("image-sync sync --dry-run" in p for p in pasted), "".join(printed)[-3000:]
    during = _azurite_dirs_of_group(demo.pid)  # not other test workers' Azurites
    assert during and during.isdisjoint(before), "the demo's Azurite folder was not found"
    clean_env = {k: v for k, v in env.items() if not k.startswith(("IMAGES_", "WALLIE_", "TRAEDE_"))}
    result = bash("\n".join(pasted), Path(tempfile.mkdtemp()), clean_env)  # pasted into another shell
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"partner": "traede"' in result.stdout and "OK   storage" in result.stdout
    os.killpg(demo.pid, signal.SIGTERM)
    demo.wait(60)
    left = {d for d in during if os.path.exists(d)}
    assert left == set(), f"SIGTERM left Azurite's folder behind: {left}"


def test_the_sandboxes_command_serves_until_sigterm(workdir):
    cwd, env = workdir
    process = subprocess.Popen(["bash", "-c", "source .venv/bin/activate && exec python -m devtools.sandboxes"],
                               cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [process.stdout.readline(), process.stdout.readline()]
    assert lines[0].startswith("wallie sandbox: http://") and lines[1].startswith("traede sandbox: http://")
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
