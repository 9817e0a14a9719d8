"""The local demo (README command a): Azurite + partner sandboxes, sample images, a real full sync.

    python -m devtools.demo [--dry-run] [--keep-running] [--sheet PATH]

With ``--dry-run`` stdout carries only the JSON lines of the dry run (the narration goes to stderr). A
real run also writes the contact sheet of its first sync (``--sheet``, default a new temporary folder) and
prints its path: its thumbnails load from the demo's Azurite, so they show while the demo runs
(``--keep-running``). A SIGTERM or Ctrl-C stops Azurite and the sandboxes and removes Azurite's temporary
folder.
"""
from __future__ import annotations

import argparse
import hashlib
import signal
import sys
import tempfile
import time
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from shared.app.cli import main as cli_main

from .azurite import Azurite
from .sandboxes import TraedeSandbox, WallieSandbox
from .seed import JUNK, seed

CONTAINER = "product-images"
CREDENTIALS = {
    "WALLIE_TENANT": "DEMO", "WALLIE_USERNAME": "wallie-user", "WALLIE_PASSWORD": "wallie-pass",
    "TRAEDE_ACCESS_TOKEN": "traede-token", "TRAEDE_APP_KEY": "traede-app-key",
}
TYPE_NAMES = {0: "front", 1: "back", 2: "alternate", 3: "zoom", 4: "lifestyle", 5: "packaging", 99: "unknown"}


REPO = Path(__file__).resolve().parent.parent
CLI = REPO / ".venv" / "bin" / "image-sync"


def run(dry_run: bool = False, keep_running: bool = False, sheet: str | None = None) -> int:
    say = _narrator(sys.stderr if dry_run else sys.stdout)
    say("Starting Azurite and the local Wallie and TRAEDE sandboxes ...")
    with Azurite() as azurite, \
            WallieSandbox(tenant="DEMO", username="wallie-user", password="wallie-pass") as wallie, \
            TraedeSandbox(access_token="traede-token", app_key="traede-app-key") as traede:
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = service.create_container(CONTAINER)
        uploaded = seed(container)
        say(f"Seeded {len(uploaded)} sample images and {len(JUNK)} junk files into '{CONTAINER}'.\n")
        env = {"IMAGES_STORAGE": azurite.connection_string, "IMAGES_CONTAINER": CONTAINER,
               "WALLIE_BASE_URL": wallie.url, "TRAEDE_BASE_URL": traede.url, **CREDENTIALS}
        if dry_run:
            say("$ image-sync sync --dry-run")
            code = _stopped_or(cli_main(["sync", "--dry-run"], env=env))
            if keep_running:
                _wait_with_env(env, say)
            return code

        print("$ image-sync sync")
        code = _stopped_or(cli_main(["sync"], env=env))
        _show_partners(wallie, traede, uploaded)

        sheet = sheet or str(Path(tempfile.mkdtemp(prefix="image-sync-demo-")) / "contact-sheet.html")
        print("\nEvery run keeps its report (RUN_HISTORY_CONTAINER). The pictures each partner got, as a page:")
        print(f"$ image-sync runs sheet latest -o {sheet}")
        sys.stdout.flush()
        cli_main(["runs", "sheet", "latest", "-o", sheet], env=env)
        print(f"contact sheet: {sheet}")
        print("  (open it in a browser while the demo runs: its thumbnails load from the demo's Azurite;"
              + (" it stops when the demo ends)" if not keep_running else " Ctrl-C ends the demo)"))

        print("\nA second run sends the same imageIds and existance keys:")
        before = traede.stats["images_new"]
        second = _stopped_or(cli_main(["sync"], env=env))
        print(f"TRAEDE downloaded {traede.stats['images_new'] - before} new images on the second run.")
        if keep_running:
            _wait_with_env(env, say)
        return code or second


def _show_partners(wallie: WallieSandbox, traede: TraedeSandbox, uploaded: dict[str, bytes]) -> None:
    digests = {hashlib.sha256(b).hexdigest(): name for name, b in uploaded.items()}
    print("\nWallie received (POST /Images/urls):")
    for image_id, record in sorted(wallie.images.items(), key=lambda kv: (kv[1]["itemId"], kv[1]["url"])):
        got = wallie.downloaded.get(image_id, {})
        blob = digests.get(got.get("sha256"))
        check = f"downloaded {got.get('size')} bytes = {blob!r}" if blob else "NOT downloaded"
        print(f"  item {record['itemId']:<7} colour {record.get('colorId', '-'):<4} "
              f"{TYPE_NAMES.get(record.get('type'), '?'):<10} id {image_id[:8]}…  {check}")
    print("\nTRAEDE received (POST /products/images/sync), the full set per product:")
    for item, images in sorted(traede.products.items()):
        print(f"  product {item}:")
        for image in sorted(images, key=lambda i: i["sort"]):
            attach = image.get("attach_to_variants_matching_attribute_code") or {}
            print(f"    {image['sort']}. {image.get('filename')!s:<28} alt {image.get('alt')!r:<34} "
                  f"variants {attach or '-'}")
    s = traede.stats
    print(f"  TRAEDE downloaded {s['images_new']} new images, kept {s['images_kept']}, deleted {s['images_deleted']}.")


def _wait_with_env(env: dict, say) -> None:
    say("\nEverything keeps running. In another shell, paste these lines (they run as printed):")
    for k, v in env.items():
        say(f"  export {k}='{v}'")
    say(f"  {CLI} sync --dry-run")
    say(f"  {CLI} doctor")
    say(f"  {CLI} runs")
    say("Ctrl-C (or SIGTERM) stops it.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _stopped_or(code: int) -> int:
    """The CLI handles SIGTERM/SIGINT itself (it reports what it did not send); the demo then stops too."""
    if code in (130, 143):
        raise KeyboardInterrupt
    return code


def _narrator(stream):
    def say(line: str = "") -> None:
        print(line, file=stream, flush=True)
    return say


def _stop_on_sigterm() -> None:
    """SIGTERM ends the demo like Ctrl-C does: the with-blocks stop Azurite (and remove its temporary
    folder) and the sandboxes instead of leaving them behind."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print what would be sent, call no partner")
    parser.add_argument("--keep-running", action="store_true", help="leave Azurite and the sandboxes up")
    parser.add_argument("--sheet", metavar="PATH", help="where to write the contact sheet of the first sync "
                                                        "(default: a new temporary folder)")
    args = parser.parse_args(argv)
    _stop_on_sigterm()
    try:
        return run(dry_run=args.dry_run, keep_running=args.keep_running, sheet=args.sheet)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
