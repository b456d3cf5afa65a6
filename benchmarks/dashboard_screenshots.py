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
from pathlib import Path


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8093", help="optuna-dashboard's URL")
    parser.add_argument("--study-id", type=int, default=1, help="the study's id in the dashboard")
    parser.add_argument("--out", default="docs/dashboard", help="folder for the pictures")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser to drive")
    args = parser.parse_args(argv)
    for path in capture(args.url, args.study_id, Path(args.out), args.chromium):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
