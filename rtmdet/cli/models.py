"""`rtmdet models`: the table of released models."""
from __future__ import annotations


def cmd_models(args) -> int:
    from ..presets import RECORDS

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    rows = [("name", "family", "input", "params(M)", "GMACs", "box AP", "mask AP", "url")]
    for r in RECORDS.values():
        rows.append((r.name, r.family, str(r.imgsz), f"{r.params_m:.3f}", num(r.gmacs, ".2f"),
                     num(r.box_ap, ".1f"), num(r.mask_ap, ".1f"), r.url or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo")
    p.set_defaults(func=cmd_models)
