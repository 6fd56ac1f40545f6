"""The calibration pages of the report (``calibs/<product>.html``): a product's registry
record, its verification tests and its figures (verification, PTC, linearity, EO)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from astropy.table import Table

from atmospec.errors import short_error
from atmospec.io import write_text_atomic
from atmospec.plots.exposure import newer_than
from atmospec.report import html as H
from atmospec.report.read import Product

__all__ = ["calibration_pages"]

log = logging.getLogger(__name__)

#: A product figure: (PNG name, caption, input files, draw(png)).
FigureSpec = tuple[str, str, list[Path], Callable[[Path], Any]]


def calibration_pages(products: Sequence[Product], used: dict[str, dict[str, str]],
                      directory: Path, force: bool, figures_on: bool = True
                      ) -> dict[str, Path]:
    """Write one page per product (drawing its figures unless they are up to date).

    Parameters
    ----------
    products : sequence of Product
        The repository's products.
    used : dict
        Calibrations used, by OBSID (kind → file name), to count each product's users.
    directory : pathlib.Path
        Where the pages go (``<report>/calibs``).
    force : bool
        Redraw figures even when newer than their inputs.
    figures_on : bool
        Draw figures at all.

    Returns
    -------
    dict
        File name of the product → its page.
    """
    pages: dict[str, Path] = {}
    certified_ptc = next((p.path for p in products if p.kind == "ptc" and p.record is not None
                          and p.record.certified), None)
    for product in products:
        page = directory / f"{product.name}.html"
        figures: list[tuple[str, str]] = []
        errors: list[str] = []
        specs = _product_figure_specs(product, certified_ptc) if figures_on else []
        for name, caption, inputs, function in specs:
            png = directory / product.name / name
            try:
                if force or not newer_than(png, inputs):
                    function(png)
                figures.append((H.rel(png, directory), caption))
            except Exception as exc:  # an unreadable product costs its figure only
                log.warning("%s: no %s (%s)", product.path, name, short_error(exc))
                errors.append(f"{name}: {type(exc).__name__}: {short_error(exc)}")
        n_used = sum(product.path.name in u.values() for u in used.values())
        write_text_atomic(_calibration_page(product, figures, errors, n_used, directory), page)
        pages[product.path.name] = page
    return pages


def _product_figure_specs(product: Product, certified_ptc: Path | None) -> list[FigureSpec]:
    """The figures a product gets."""
    specs: list[FigureSpec] = []
    if product.verification is not None and product.verification_path is not None:
        from atmospec.plots.verify import plot_verification

        doc = product.verification
        specs.append(("verify.png", "Verification tests per amplifier: value (bar, green pass, "
                      "red fail) against the threshold (black tick).",
                      [product.verification_path], lambda png: plot_verification(doc, png)))
    path = product.path
    if product.kind == "ptc":
        from atmospec.plots.ptc import plot_ptc

        specs.append(("ptc.png", "Photon-transfer curves per amplifier with their fits, "
                      "residuals and variance/mean.", [path], lambda png: plot_ptc(path, png)))
    if product.kind == "linearizer" and certified_ptc is not None:
        from atmospec.plots.ptc import plot_linearity

        specs.append(("linearity.png", "Ramp non-linearity before and after the correction "
                      "(ramp of the certified PTC).", [path, certified_ptc],
                      lambda png: plot_linearity(certified_ptc, path, png)))
    if product.kind == "eo":
        from atmospec.plots.eo import plot_eo_summary

        specs.append(("eo.png", "Electro-optical figures per amplifier against their "
                      "reference values.", [path],
                      lambda png: plot_eo_summary(Table.read(path, format="ascii.ecsv"), png)))
    return specs


def _calibration_page(product: Product, figures: list[tuple[str, str]], errors: list[str],
                      n_used: int, directory: Path) -> str:
    rec = product.record
    rows: list[tuple[str, H.Cell | str]] = [("kind", product.kind),
                                            ("file", H.Cell(product.path.name,
                                                            href=H.rel(product.path,
                                                                       directory)))]
    if rec is not None:
        rows += [("registry id", str(rec.id)), ("filter~disperser", rec.physical_filter or "–"),
                 ("valid from (UTC)", rec.valid_from), ("valid to (UTC)", rec.valid_to or "open"),
                 ("product date", rec.calib_date), ("certified", "yes" if rec.certified else "no"),
                 ("registered at", rec.registered_at), ("registered from", rec.source)]
    verdict = None if product.verification is None else bool(product.verification.get("pass"))
    rows.append(("verification", H.verdict(verdict)))
    if product.verification_path is not None:
        rows.append(("verification report", H.Cell(product.verification_path.name,
                                                   href=H.rel(product.verification_path,
                                                              directory))))
    rows.append(("used by", f"{n_used} exposure(s) of this report"))
    body = [H.table(["field", "value"], [[k, v] for k, v in rows])]
    if product.verification is not None:
        failures = product.verification.get("failures") or []
        if failures:
            body.append(H.note("Failed tests: " + ", ".join(map(str, failures)), "error"))
        body.append("<h2>Verification tests</h2>")
        body.append(_verification_table(product.verification))
    elif product.kind != "eo":
        body.append(H.note("No verification report was registered with this product."))
    if figures:
        body.append("<h2>Figures</h2>")
        body += [H.figure(src, caption) for src, caption in figures]
    body += [H.note(f"Figure not drawn: {e}", "error") for e in errors]
    nav = (f'<nav>{H.link("../index.html", "night")}'
           f'{H.link("../index.html#calibrations", "calibrations")}</nav>')
    return H.page(f"{product.name} — {product.kind}", "\n".join(body), nav=nav)


def _verification_table(doc: dict[str, Any]) -> str:
    """Amps (and the detector) × tests: value, threshold, verdict."""
    entries: dict[str, dict[str, Any]] = {a: e.get("tests", {}) for a, e in
                                          doc.get("amps", {}).items()}
    if doc.get("detector", {}).get("tests"):
        entries["detector"] = doc["detector"]["tests"]
    names = sorted({n for tests in entries.values() for n in tests})
    rows = []
    for amp, tests in entries.items():
        cells: list[H.Cell | str] = [amp]
        for name in names:
            t = tests.get(name)
            if t is None:
                cells.append("–")
                continue
            unit = f" {t['unit']}" if t.get("unit") else ""
            rule = (str(t.get("comparison", "")).replace("value", "v")
                    .replace("threshold", H.fmt_number(t.get("threshold")))
                    .replace("<=", "≤").replace(">=", "≥"))
            text = f"{H.fmt_number(t.get('value'))}{unit} ({rule})"
            cells.append(H.Cell(text, css="pass" if t.get("pass") else "fail"))
        rows.append(cells)
    return H.table(["amp", *names], rows)
