"""report.html (one self-contained file: inline CSS, SVG plots, frames as base64 JPEG) and
results.csv, from results.jsonl and failures.jsonl."""

from __future__ import annotations

import base64
import csv
import datetime
import html
import json
import math
import os
import statistics

from . import results

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px 32px;color:#1b1b1b;max-width:1320px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:2px solid #ddd;padding-bottom:4px}
h3{font-size:16px;margin:18px 0 6px}.muted{color:#666}.small{font-size:12px}
table{border-collapse:collapse;margin:6px 0 12px}th,td{border:1px solid #d6d6d6;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#e8f5e9;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:22px}.note{background:#fff8e1;border:1px solid #f0d98a;padding:8px 12px;border-radius:6px}
.bad{color:#b71c1c}.ok{color:#1b5e20}.sheet td{padding:2px 6px}.sheet img{height:72px;margin-right:2px;image-rendering:pixelated}
.plots{display:flex;flex-wrap:wrap;gap:18px}code{font-size:12px}
"""


def _f(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def _mean(values):
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.fmean(v) if v else None


def _scored(r: dict) -> bool:
    return "identity" in (r.get("scores") or {})


def ident(r: dict, key: str = "mean"):
    return ((r.get("scores") or {}).get("identity") or {}).get(key)


def motion(r: dict):
    return (r.get("scores") or {}).get("motion")


def settings_label(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "(defaults)"


def by_setting(rows: list) -> list:
    """One row per grid point: the videos' mean similarity, p10, face share, motion and time."""
    groups = {}
    for r in rows:
        groups.setdefault(json.dumps(r.get("settings", {}), sort_keys=True), []).append(r)
    out = []
    for key, rs in groups.items():
        out.append({"settings": json.loads(key), "videos": len(rs), "mean": _mean([ident(r) for r in rs]),
                    "p10": _mean([ident(r, "p10") for r in rs]), "face_share": _mean([ident(r, "face_share") for r in rs]),
                    "motion": _mean([motion(r) for r in rs]),
                    "time_s": _mean([(r.get("scores") or {}).get("time_s") for r in rs])})
    return sorted(out, key=lambda g: json.dumps(g["settings"], sort_keys=True))


def best_setting(groups: list, min_motion: float):
    """The grid point with the highest mean similarity among those moving at least min_motion."""
    ok = [g for g in groups if g["mean"] is not None and g["motion"] is not None and g["motion"] >= min_motion]
    return max(ok, key=lambda g: g["mean"]) if ok else None


# ------------------------------------------------------------------------------------------
# SVG

def _ticks(lo, hi, n=5):
    if hi == lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def scatter(points: list, xlabel: str, ylabel: str, width: int = 560, height: int = 330, legend=None) -> str:
    """points: (x, y, colour, tooltip). An inline SVG scatter plot with axes and ticks."""
    pts = [p for p in points if p[0] is not None and p[1] is not None]
    ml, mr, mt, mb = 62, 14, 28, 46
    w, h = width - ml - mr, height - mt - mb
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<rect x="{ml}" y="{mt}" width="{w}" height="{h}" fill="#fafafa" stroke="#999"/>']
    if not pts:
        parts.append(f'<text x="{ml + w / 2}" y="{mt + h / 2}" text-anchor="middle" fill="#888">no scored videos</text>')
    else:
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        x0, x1 = min(xs), max(xs)
        y0, y1 = min(ys), max(ys)
        padx = (x1 - x0) * 0.08 or (abs(x0) * 0.1 or 0.5)
        pady = (y1 - y0) * 0.1 or (abs(y0) * 0.05 or 0.05)
        x0, x1, y0, y1 = x0 - padx, x1 + padx, y0 - pady, y1 + pady
        sx = lambda v: ml + (v - x0) / (x1 - x0) * w  # noqa: E731
        sy = lambda v: mt + h - (v - y0) / (y1 - y0) * h  # noqa: E731
        for t in _ticks(x0, x1):
            parts.append(f'<line x1="{sx(t):.1f}" y1="{mt}" x2="{sx(t):.1f}" y2="{mt + h}" stroke="#e4e4e4"/>'
                         f'<text x="{sx(t):.1f}" y="{mt + h + 15}" text-anchor="middle">{t:g}</text>')
        for t in _ticks(y0, y1):
            parts.append(f'<line x1="{ml}" y1="{sy(t):.1f}" x2="{ml + w}" y2="{sy(t):.1f}" stroke="#e4e4e4"/>'
                         f'<text x="{ml - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
        for x, y, colour, tip in pts:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{colour}" fill-opacity="0.75" '
                         f'stroke="#222" stroke-width="0.6"><title>{html.escape(tip)}</title></circle>')
    parts.append(f'<text x="{ml + w / 2}" y="{height - 8}" text-anchor="middle" font-size="12">{html.escape(xlabel)}</text>')
    parts.append(f'<text x="14" y="{mt + h / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {mt + h / 2})">{html.escape(ylabel)}</text>')
    if legend:  # above the plot area, so it never hides a point
        x = ml
        for name, colour in legend:
            parts.append(f'<circle cx="{x + 5}" cy="{mt - 12}" r="5" fill="{colour}"/>'
                         f'<text x="{x + 14}" y="{mt - 8}">{html.escape(name)}</text>')
            x += 30 + 6.5 * len(name)
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------
# The page

def _img(data: bytes) -> str:
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(data).decode("ascii")}" alt="">'


def _numeric_addresses(rows: list) -> list:
    keys = []
    for r in rows:
        for k, v in (r.get("settings") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in keys:
                keys.append(k)
    return keys


def _settings_table(groups: list, best) -> str:
    out = ['<table><tr><th>settings</th><th>videos</th><th>similarity mean</th><th>p10</th><th>face share</th>'
           '<th>motion</th><th>time (s)</th></tr>']
    for g in groups:
        cls = ' class="best"' if best is not None and g is best else ""
        out.append(f'<tr{cls}><td>{html.escape(settings_label(g["settings"]))}</td><td class="num">{g["videos"]}</td>'
                   f'<td class="num">{_f(g["mean"])}</td><td class="num">{_f(g["p10"])}</td>'
                   f'<td class="num">{_f(g["face_share"], 2)}</td><td class="num">{_f(g["motion"], 4)}</td>'
                   f'<td class="num">{_f(g["time_s"], 1)}</td></tr>')
    out.append("</table>")
    return "".join(out)


def _best_text(best, min_motion: float, groups=(), scored: bool = True) -> str:
    if not scored:
        return ('<p class="muted">These videos were not scored (the run used --no-score): there are no figures to '
                'rank the settings by.</p>')
    if best is None and groups and all(g["mean"] is None for g in groups):
        return ('<p class="bad">No face was found in any of these videos, so there is no similarity to rank the '
                'settings by (see the contact sheets).</p>')
    if best is None:
        return (f'<p class="bad">No setting moves at least {min_motion:g} (motion) with a scored face: lower the '
                'motion floor (--min-motion) or look at the table.</p>')
    return (f'<p>Keeps the face best at motion &ge; {min_motion:g}: <b>{html.escape(settings_label(best["settings"]))}</b> '
            f'(similarity {_f(best["mean"])}, motion {_f(best["motion"], 4)}, {best["videos"]} videos).</p>')


def consent_text(rows: list, person_consent) -> str:
    recorded = [r for r in rows if (r.get("consent") or {}).get("status") == "recorded"]
    in_manifest = [r for r in rows if (r.get("consent") or {}).get("in_manifest")]
    record = next((r["consent"].get("record") for r in recorded if r["consent"].get("record")), None) or person_consent
    if record:
        until = record.get("valid_until", "?")
        doc = record.get("document_id") or (record.get("document_sha256") or "")[:16]
        return (f'<span class="ok">consent recorded</span>: {html.escape(str(record.get("subject", "")))}, '
                f'purpose "{html.escape(str(record.get("purpose", "")))}", valid until {html.escape(str(until))}, '
                f'document {html.escape(str(doc))}; in the C2PA manifest of {len(in_manifest)}/{len(rows)} videos')
    return '<span class="bad">no consent record</span> for this person'


def write(out_dir: str, plan=None, min_motion: float | None = None, frames_per_video: int = 4) -> tuple[str, str]:
    """Writes report.html and results.csv into out_dir; returns their paths."""
    from . import score
    rows = list(results.done(out_dir).values())
    done_keys = {r["key"] for r in rows}
    fails = {}
    for f in results.read(os.path.join(out_dir, results.FAILURES)):
        if f.get("key") not in done_keys:
            fails[f.get("key")] = f  # the latest reason for a job still not done
    min_motion = float(min_motion if min_motion is not None else (plan.min_motion if plan else 0.0))
    people = list(dict.fromkeys([p.name for p in plan.people] if plan else [r["person"] for r in rows]))
    for name in [r["person"] for r in rows] + [f.get("person") for f in fails.values()]:
        if name and name not in people:
            people.append(name)
    colour = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(people)}
    total = len(plan.jobs) if plan else len(rows) + len(fails)
    consent_of = {p.name: p.consent for p in plan.people} if plan else {}
    csv_path = write_csv(out_dir, rows)

    body = [f"<h1>Pilot report: {html.escape(plan.name if plan else os.path.basename(out_dir))}</h1>",
            f'<p class="muted">workflow <code>{html.escape(plan.workflow_name if plan else "?")}</code> · written '
            f'{datetime.datetime.now().strftime("%Y-%m-%d %H:%M")} · results in <code>results.jsonl</code> / '
            f'<code>results.csv</code> beside this file</p>']
    servers = sorted({r.get("server", "?") for r in rows})
    embedders = sorted({ident(r, "embedder") for r in rows if ident(r, "embedder")})
    body.append('<div class="cards">'
                f'<div class="card">videos done<b>{len(rows)} / {total}</b></div>'
                f'<div class="card">failed<b class="{"bad" if fails else ""}">{len(fails)}</b></div>'
                f'<div class="card">not run yet<b>{max(0, total - len(rows) - len(fails))}</b></div>'
                f'<div class="card">servers<b>{len(servers)}</b></div>'
                f'<div class="card">mean similarity<b>{_f(_mean([ident(r) for r in rows]))}</b></div>'
                f'<div class="card">mean motion<b>{_f(_mean([motion(r) for r in rows]), 4)}</b></div></div>')
    thr = next((ident(r, "threshold") for r in rows if ident(r, "threshold") is not None), None)
    body.append('<p class="note small"><b>Reading the figures.</b> Similarity: cosine between the face in each frame '
                f'and the person\'s photo ({html.escape(", ".join(embedders) + " embedder" if embedders else "no video scored")}'
                + (f"; same person above about {thr:g}" if thr else "") + '); mean over the frames with a face, p10 '
                'the level 90% of those frames stay above, face share the frames where a face was found at all. '
                'Motion: mean optical flow between frames as a share of the frame\'s longer side (0.01 = 1% per '
                'frame); it measures how much moves, not whether it looks right. Compare settings within one '
                'report; a few videos per setting are a pilot, not a benchmark.</p>')

    groups_all = by_setting(rows)
    best_all = best_setting(groups_all, min_motion)
    body.append("<h2>All people</h2>")
    body.append(_best_text(best_all, min_motion, groups_all, any(_scored(r) for r in rows)))
    body.append(_settings_table(groups_all, best_all))

    legend = [(p, colour[p]) for p in people]
    plots = []
    for address in _numeric_addresses(rows):
        pts = [(r["settings"].get(address), ident(r), colour[r["person"]],
                f'{r["person"]}, seed {r["seed"]}, {settings_label(r["settings"])}: {_f(ident(r))}') for r in rows]
        plots.append(f"<div><h3>Similarity against {html.escape(address)}</h3>"
                     f"{scatter(pts, address, 'similarity (mean)', legend=legend)}</div>")
    pts = [(motion(r), ident(r), colour[r["person"]],
            f'{r["person"]}, seed {r["seed"]}, {settings_label(r["settings"])}: motion {_f(motion(r), 4)}, '
            f'similarity {_f(ident(r))}') for r in rows]
    plots.append(f"<div><h3>Similarity against motion</h3>{scatter(pts, 'motion (flow / frame size)', 'similarity (mean)', legend=legend)}</div>")
    body.append('<div class="plots">' + "".join(plots) + "</div>")

    for person in people:
        prow = [r for r in rows if r["person"] == person]
        body.append(f'<h2><span style="color:{colour[person]}">&#9679;</span> {html.escape(person)}</h2>')
        body.append(f"<p>{consent_text(prow, consent_of.get(person))}</p>")
        pfail = sum(1 for f in fails.values() if f.get("person") == person)
        if pfail:
            body.append(f'<p class="bad">{pfail} job(s) failed for this person: see <a href="#failures">Failures</a>.</p>')
        if not prow:
            body.append('<p class="muted">no video done for this person</p>')
            continue
        groups = by_setting(prow)
        best = best_setting(groups, min_motion)
        body.append(_best_text(best, min_motion, groups, any(_scored(r) for r in prow)))
        body.append(_settings_table(groups, best))
        body.append('<h3>Contact sheet</h3><table class="sheet"><tr><th>prompt</th><th>seed</th><th>settings</th>'
                    '<th>frames</th><th>similarity</th><th>motion</th><th>server</th></tr>')
        for r in sorted(prow, key=lambda r: (r["prompt"], json.dumps(r["settings"], sort_keys=True), r["seed"])):
            try:
                thumbs = "".join(_img(b) for b in score.contact_frames(os.path.join(out_dir, r["file"]), frames_per_video))
            except (OSError, ValueError) as e:
                thumbs = f'<span class="bad">{html.escape(str(e))}</span>'
            body.append(f'<tr><td class="small">{html.escape(r["prompt"][:90])}</td><td class="num">{r["seed"]}</td>'
                        f'<td class="small">{html.escape(settings_label(r["settings"]))}</td><td>{thumbs}</td>'
                        f'<td class="num">{_f(ident(r))}</td><td class="num">{_f(motion(r), 4)}</td>'
                        f'<td class="small">{html.escape(r.get("server", ""))}<br><a href="{html.escape(r["file"])}">video</a></td></tr>')
        body.append("</table>")

    body.append("<h2>Models and adapters</h2>")
    models = {}
    for r in rows:
        for m in r.get("models") or []:
            k = (m.get("role") or "", m.get("name") or "", m.get("sha256") or "")
            models[k] = models.get(k, 0) + 1
    unsigned = sum(1 for r in rows if not (r.get("provenance") or {}).get("manifest"))
    if models:
        body.append("<table><tr><th>role</th><th>file</th><th>sha256</th><th>videos</th></tr>" + "".join(
            f"<tr><td>{html.escape(k[0])}</td><td>{html.escape(k[1])}</td><td><code>{html.escape(k[2] or 'unknown')}</code></td>"
            f'<td class="num">{n}</td></tr>' for k, n in sorted(models.items())) + "</table>")
    body.append(f'<p class="small muted">From each video\'s C2PA manifest (what the server actually loaded). '
                f'{unsigned} video(s) carry no manifest.</p>')

    body.append(f'<h2 id="failures">Failures ({len(fails)})</h2>')
    if fails:
        body.append("<table><tr><th>person</th><th>seed</th><th>settings</th><th>server</th><th>reason</th></tr>" + "".join(
            f'<tr><td>{html.escape(f.get("person", ""))}</td><td class="num">{f.get("seed")}</td>'
            f'<td class="small">{html.escape(settings_label(f.get("settings") or {}))}</td>'
            f'<td class="small">{html.escape(f.get("server", ""))}</td>'
            f'<td class="small">{html.escape(_reason(f))}</td></tr>'
            for f in fails.values()) + "</table>")
        body.append('<p class="small muted">A re-run of the same plan into this folder tries failed jobs again.</p>')
    else:
        body.append("<p>none</p>")

    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Pilot report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>")
    path = os.path.join(out_dir, "report.html")
    with open(path + ".part", "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(path + ".part", path)
    return path, csv_path


def _reason(f: dict) -> str:
    node = f.get("node")
    return (f"node {node}: " if node else "") + str(f.get("reason", ""))


def write_csv(out_dir: str, rows: list) -> str:
    addresses = []
    for r in rows:
        for k in r.get("settings") or {}:
            if k not in addresses:
                addresses.append(k)
    cols = (["person", "prompt", "seed"] + addresses +
            ["similarity_mean", "similarity_min", "similarity_p10", "face_share", "motion", "time_s", "wall_s",
             "server", "file", "sha256", "consent", "models", "key"])
    path = os.path.join(out_dir, "results.csv")
    with open(path + ".part", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            s = r.get("scores") or {}
            w.writerow([r.get("person"), r.get("prompt"), r.get("seed")] + [r["settings"].get(a) for a in addresses] +
                       [ident(r), ident(r, "min"), ident(r, "p10"), ident(r, "face_share"), s.get("motion"),
                        s.get("time_s"), s.get("wall_s"), r.get("server"), r.get("file"), r.get("sha256"),
                        (r.get("consent") or {}).get("status"),
                        " ".join(f"{m.get('role')}:{(m.get('sha256') or '')[:16]}" for m in r.get("models") or []),
                        r.get("key")])
    os.replace(path + ".part", path)
    return path
