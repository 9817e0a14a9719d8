"""Build the deployment zip of a Functions project, honouring its .funcignore.

Used by deploy.sh; Python so that the result is the same on every machine (bash + zip differ between
Linux and macOS, and `zip` is not always installed). The zip is deterministic (sorted entries, fixed
timestamps), so its SHA-256 identifies the code: deploy.sh skips the upload when the app already runs
that hash.

.funcignore uses gitignore syntax, as Azure Functions Core Tools reads it: blank lines and `#` comments
are skipped, `!` re-includes, a trailing `/` matches directories only, a pattern with a `/` before its
end is anchored at the project root, otherwise it matches a name at any depth; `*`, `?`, `[...]` and
`**` work as in git. As in git, nothing inside an excluded directory can be re-included.

A few paths are never packaged, whatever .funcignore says, because shipping them is always a mistake:
version-control metadata, local.settings.json (it holds local secrets), Python caches, virtual
environments, node_modules (Azurite and other dev tools) and the deploy script's own build folder.

Usage: python3 package.py PROJECT_DIR OUTPUT_ZIP   -> prints "<sha256>  <zip path>"
"""

import hashlib
import os
import re
import stat
import sys
import zipfile

ALWAYS_EXCLUDED = [
    ".git/",
    ".funcignore",
    "local.settings.json",
    "__pycache__/",
    "*.py[cod]",
    ".venv*/",
    "venv/",
    "deploy/.build/",
    ".python_packages/",
    "node_modules/",
]

# Used only when the project has no .funcignore, so that tests, tools and the deploy scripts never
# reach the function app by accident.
DEFAULT_FUNCIGNORE = [
    ".vscode/",
    ".ci/",
    ".github/",
    "tests/",
    "devtools/",
    "bench/",
    "deploy/",
    "scripts/",
    "node_modules/",
    "*.zip",
    ".pytest_cache/",
    ".hypothesis/",
    "__azurite_db*",
    "__blobstorage__/",
    "__queuestorage__/",
    "__tablestorage__/",
    "local.settings.json.example",
    "package.json",
    "package-lock.json",
]

REQUIRED_FILES = ["host.json", "requirements.txt", "function_app.py"]

FIXED_DATE = (1980, 1, 1, 0, 0, 0)


class Rule:
    """One .funcignore line, compiled to a regular expression over '/'-separated relative paths."""

    def __init__(self, line):
        self.negated = line.startswith("!")
        if self.negated:
            line = line[1:]
        self.directory_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        line = line.lstrip("/")
        body = _glob_to_regex(line)
        prefix = "" if anchored else "(?:.*/)?"
        self.regex = re.compile(f"^{prefix}{body}$")

    def matches(self, rel_path, is_dir):
        if self.directory_only and not is_dir:
            return False
        return bool(self.regex.match(rel_path))


def _glob_to_regex(pattern):
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            out.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*")
            i += 1
        elif char == "?":
            out.append("[^/]")
            i += 1
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
                i += 1
            else:
                klass = pattern[i + 1:end]
                if klass.startswith("!"):
                    klass = "^" + klass[1:]
                out.append(f"[{klass}]")
                i = end + 1
        elif char == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def load_rules(project_dir):
    path = os.path.join(project_dir, ".funcignore")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    else:
        print(f"warning: {path} not found; using the built-in exclusion list", file=sys.stderr)
        lines = DEFAULT_FUNCIGNORE
    rules = []
    for raw in lines:
        line = raw.rstrip()
        if not line or line.startswith("#"):
            continue
        rules.append(Rule(line))
    return [Rule(line) for line in ALWAYS_EXCLUDED], rules


def is_excluded(rel_path, is_dir, always, rules):
    if any(rule.matches(rel_path, is_dir) for rule in always):
        return True
    excluded = False
    for rule in rules:  # the last matching rule wins, as in git
        if rule.matches(rel_path, is_dir):
            excluded = not rule.negated
    return excluded


def collect_files(project_dir, output_zip=None):
    """Return the sorted relative paths that go into the package."""
    always, rules = load_rules(project_dir)
    output_real = os.path.realpath(output_zip) if output_zip else None
    files = []
    for root, dirs, names in os.walk(project_dir):
        rel_root = os.path.relpath(root, project_dir)
        rel_root = "" if rel_root == "." else rel_root.replace(os.sep, "/") + "/"
        dirs[:] = sorted(d for d in dirs if not is_excluded(rel_root + d, True, always, rules))
        for name in sorted(names):
            rel = rel_root + name
            full = os.path.join(root, name)
            if os.path.islink(full) and not os.path.exists(full):
                continue
            if output_real and os.path.realpath(full) == output_real:
                continue
            if not is_excluded(rel, False, always, rules):
                files.append(rel)
    return sorted(files)


def build(project_dir, output_zip):
    missing = [name for name in REQUIRED_FILES if not os.path.isfile(os.path.join(project_dir, name))]
    if missing:
        raise SystemExit(f"error: {project_dir} is not a Functions project: missing {', '.join(missing)}")
    files = collect_files(project_dir, output_zip)
    os.makedirs(os.path.dirname(os.path.abspath(output_zip)), exist_ok=True)
    tmp = output_zip + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel in files:
            full = os.path.join(project_dir, rel)
            info = zipfile.ZipInfo(rel, date_time=FIXED_DATE)
            mode = 0o755 if os.stat(full).st_mode & stat.S_IXUSR else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(full, "rb") as handle:
                archive.writestr(info, handle.read())
    os.replace(tmp, output_zip)
    digest = hashlib.sha256()
    with open(output_zip, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest(), files


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[-1].replace("Usage: ", "usage: "), file=sys.stderr)
        return 2
    project_dir, output_zip = argv[1], argv[2]
    sha, files = build(project_dir, output_zip)
    print(f"{sha}  {output_zip}")
    print(f"packaged {len(files)} files from {project_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
