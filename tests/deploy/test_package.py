"""deploy/package.py: the zip deploy.sh uploads, built from the project honouring .funcignore."""

import subprocess
import sys
import zipfile

import pytest
from deploy_harness import DEPLOY_DIR, make_project

sys.path.insert(0, str(DEPLOY_DIR))
import package  # noqa: E402


def files_for(tmp_path, funcignore, extra=()):
    root = make_project(tmp_path / "proj")
    (root / ".funcignore").write_text(funcignore)
    for rel in extra:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    return package.collect_files(str(root))


def test_gitignore_style_rules(tmp_path):
    files = files_for(tmp_path, "\n".join([
        "# comment", "", "tests/", "/devtools", "*.md", "!README.md", "docs/**/draft*", "deploy", "build/",
    ]), extra=["README.md", "NOTES.md", "shared/NOTES.md", "docs/a/b/draft1.txt", "docs/a/final.txt",
               "shared/build", "build/out.txt", "shared/devtools/keep.py"])
    assert "README.md" in files and "NOTES.md" not in files and "shared/NOTES.md" not in files
    assert "docs/a/final.txt" in files and "docs/a/b/draft1.txt" not in files
    assert not any(f.startswith(("tests/", "devtools/", "deploy/", "build/")) for f in files)
    assert "shared/devtools/keep.py" in files, "a leading / anchors the pattern at the root"
    assert "shared/build" in files, "a trailing / matches directories only"


def test_never_packaged_whatever_funcignore_says(tmp_path):
    files = files_for(tmp_path, "", extra=[".git/config", "functions/__pycache__/x.cpython-311.pyc",
                                           ".venv/lib/site.py", ".venv-azcli/bin/az", "node_modules/azurite/x.js"])
    assert "local.settings.json" not in files
    assert not any(f.startswith((".git/", ".venv", "node_modules/")) or "__pycache__" in f for f in files)
    assert "host.json" in files and "tests/test_something.py" in files  # nothing else excluded


def test_missing_funcignore_uses_safe_defaults(tmp_path):
    root = make_project(tmp_path / "proj")
    (root / ".funcignore").unlink()
    files = package.collect_files(str(root))
    assert not any(f.startswith(("tests/", "devtools/", "deploy/")) for f in files)
    assert {"host.json", "function_app.py", "requirements.txt"} <= set(files)


def test_zip_is_reproducible_and_excludes_itself(tmp_path):
    root = make_project(tmp_path / "proj")
    out = root / "out" / "app.zip"
    first, _ = package.build(str(root), str(out))
    second, _ = package.build(str(root), str(out))
    assert first == second
    with zipfile.ZipFile(out) as archive:
        assert "out/app.zip" not in archive.namelist()
        assert "host.json" in archive.namelist()


def test_not_a_functions_project(tmp_path):
    (tmp_path / "host.json").write_text("{}")
    result = subprocess.run([sys.executable, str(DEPLOY_DIR / "package.py"), str(tmp_path), str(tmp_path / "a.zip")],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "requirements.txt" in result.stderr and "function_app.py" in result.stderr


def test_real_repository_packages_without_tests_or_tools():
    repo = DEPLOY_DIR.parent
    if not (repo / "host.json").exists():
        pytest.skip("the app is not in the repository yet")
    files = package.collect_files(str(repo))
    assert not any(f.startswith(("tests/", "deploy/", ".venv", ".git/")) for f in files)
    assert "local.settings.json" not in files
