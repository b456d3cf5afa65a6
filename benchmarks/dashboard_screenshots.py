"""Screenshots of optuna-dashboard's DyLoRA views (``docs/dashboard/``): score against
``lora_rank`` (the Slice plot) and the Pareto front of score against trainable parameters.

Not a benchmark: how the README's pictures were made, so they can be made again. It drives a
running optuna-dashboard with Playwright on the system's Chromium (``pip install playwright``
in a separate environment; no browser download: ``apt-get install -y chromium``). The study in
the pictures is ``docs/dashboard/dylora_spec.json`` (three DyLoRA trainings of MiniLM on an
SST-2 slice, r_max 8), run with one CPU worker::

    archsearch serve --storage sqlite:///d.db --port 50561 &
    archsearch launch --spec docs/dashboard/dylora_spec.json --server 127.0.0.1:50561
    archsearch worker --server 127.0.0.1:50561 --trainer lora --max-trials 3
    optuna-dashboard sqlite:///d.db --host 127.0.0.1 --port 8093 &
    python benchmarks/dashboard_screenshots.py --url http://127.0.0.1:8093 --study-id 1
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _argtypes import existing_file, parser_for, whole

QUICK = """\
    the five commands above (three short DyLoRA trainings on one CPU worker), or, with a
    dashboard already running on a study:
    python benchmarks/dashboard_screenshots.py --url http://127.0.0.1:8093 --study-id 1 \\
        --out /tmp/shots"""


def capture(url: str, study_id: int, out: Path, chromium: str) -> list[Path]:
    """Writes ``dylora_score_vs_rank.png`` and ``dylora_pareto.png`` into ``out``."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    slice_png, pareto_png = out / "dylora_score_vs_rank.png", out / "dylora_pareto.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/dashboard/studies/{study_id}/analytics")
        page.wait_for_timeout(5000)  # the plots are drawn in the page
        card = page.locator(".MuiCard-root", has=page.get_by_text("Slice", exact=True)).first
        card.get_by_role("combobox").nth(1).click()  # the parameter on the x axis
        page.get_by_role("option", name="Param lora_rank").click()
        page.wait_for_timeout(3000)
        card.screenshot(path=str(slice_png))
        page.goto(f"{url}/dashboard/studies/{study_id}")
        page.wait_for_timeout(5000)
        front = page.locator(".MuiCard-root", has=page.get_by_text("Pareto Front", exact=True))
        front.first.screenshot(path=str(pareto_png))
        browser.close()
    return [slice_png, pareto_png]


def http_url(text: str) -> str:
    """An ``http://`` or ``https://`` URL with a host."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"expected http://HOST:PORT, got {text!r}")
    return text


def out_folder(text: str) -> str:
    """A folder for the pictures (made when missing), not a file."""
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = parser_for(__doc__, QUICK, "Goal: none (not a benchmark).")
    parser.add_argument(
        "--url", default="http://127.0.0.1:8093", type=http_url, help="optuna-dashboard's URL"
    )
    parser.add_argument(
        "--study-id", type=whole(0), default=1, help="the study's id in the dashboard"
    )
    parser.add_argument(
        "--out", default="docs/dashboard", type=out_folder, help="folder for the pictures"
    )
    parser.add_argument(
        "--chromium",
        default="/usr/bin/chromium",
        type=existing_file,
        help="the browser to drive",
    )
    args = parser.parse_args(argv)
    if importlib.util.find_spec("playwright") is None:
        parser.error("needs playwright: pip install playwright (see above; no browser download)")
    for path in capture(args.url, args.study_id, Path(args.out), args.chromium):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
