"""Adaptive quality benchmark: `pixbatch convert --threads 1` on the corpus photos
with fixed q50, `auto:T` (T = the median SSIMULACRA2 of fixed q50), `auto:80` and
`--max-bytes 150000`, every output scored by an SSIMULACRA2 implementation the
product does not use (PyPI `ssimulacra2`, numpy/scipy), against the source as
Pillow decodes it. Prints a Markdown table per run and PASS/MISS per target of
issue 18; exits 0 either way.

Usage: quality.py PIXBATCH_BIN WORK_DIR PHOTO...
Env: BENCH_JOBS (parallel scorings, default 1: the CPU figures come from
`convert`'s own per-thread CPU time, so scoring in parallel does not skew them).
"""

import os
import re
import statistics
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ssimulacra2 import compute_ssimulacra2

LINE = re.compile(
    r"^(?P<name>\S+)\tok\t\S+ (?P<w>\d+)x(?P<h>\d+)\t(?P<bin>\d+) -> (?P<bout>\d+) bytes"
    r"\tq(?P<q>\d+)\t[\d.]+ ms(?:\t(?P<note>[a-z ]+))?\tcpu=(?P<cpu>[\d.]+)ms"
    r" tries=(?P<tries>\d+) binding=(?P<binding>\w+)(?: score=(?P<score>[\d.-]+))?"
    r"(?P<down> downscaled)?$"
)


def convert(binary, out, args, photos):
    """Runs `pixbatch convert` and returns its per-file rows keyed by file stem."""
    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [binary, "convert", "--threads", "1", "--out", str(out), *args, *photos],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = {}
    for line in run.stdout.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        stem = Path(m["name"]).stem
        rows[stem] = {
            "source": m["name"],
            "output": str(out / f"{stem}.jpg"),
            "width": int(m["w"]),
            "height": int(m["h"]),
            "bytes": int(m["bout"]),
            "quality": int(m["q"]),
            "cpu_ms": float(m["cpu"]),
            "tries": int(m["tries"]),
            "binding": m["binding"],
            "own_score": float(m["score"]) if m["score"] else None,
            "downscaled": bool(m["down"]),
            "kept": m["note"] == "kept original",
        }
    if len(rows) != len(photos):
        sys.exit(f"convert {args}: {len(rows)} report lines for {len(photos)} photos:\n{run.stdout}")
    return rows


def _score(pair):
    return compute_ssimulacra2(*pair)


def score_all(pool, rows, stems=None):
    """Adds the independent score to each row (of `stems`, default all)."""
    stems = list(rows) if stems is None else stems
    pairs = [(rows[s]["source"], rows[s]["output"]) for s in stems]
    for s, score in zip(stems, pool.map(_score, pairs)):
        rows[s]["score"] = score


def total(rows, key):
    return sum(r[key] for r in rows.values())


def table(title, rows, target=None):
    print(f"\n### {title}\n")
    print("| photo | MP | quality | tries | binding | bytes | SSIMULACRA2 (independent) | own score | CPU ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for stem, r in sorted(rows.items()):
        mp = r["width"] * r["height"] / 1e6
        score = f"{r['score']:.2f}" if "score" in r else "—"
        own = f"{r['own_score']:.2f}" if r["own_score"] is not None else "—"
        flag = " ⚠" if target is not None and "score" in r and r["score"] < target else ""
        print(
            f"| {stem} | {mp:.2f} | {r['quality']} | {r['tries']} | {r['binding']}"
            f"{' (downscaled %dx%d)' % (r['width'], r['height']) if r['downscaled'] else ''}"
            f" | {r['bytes']} | {score}{flag} | {own} | {r['cpu_ms']:.0f} |"
        )
    print(f"| **all** | | | {total(rows, 'tries')} | | **{total(rows, 'bytes')}** | | | **{total(rows, 'cpu_ms'):.0f}** |")


def verdict(ok, text):
    print(f"- {'PASS' if ok else 'MISS'}: {text}")
    return ok


def main():
    binary, work, photos = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    jobs = int(os.environ.get("BENCH_JOBS", "1"))
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        q50 = convert(binary, work / "q50", ["--quality", "50"], photos)
        score_all(pool, q50)
        scores = [r["score"] for r in q50.values()]
        median = statistics.median(scores)
        target = round(median)
        floor = median - 1
        print(
            f"fixed q50: SSIMULACRA2 {min(scores):.1f} to {max(scores):.1f}, median T = {median:.2f};"
            f" auto target N = {target}, floor T - 1 = {floor:.2f}"
        )
        table("Fixed quality 50", q50)

        auto = convert(binary, work / "auto", ["--quality", f"auto:{target}"], photos)
        score_all(pool, auto)
        table(f"quality=auto:{target}", auto, floor)

        # The smallest fixed quality that gets every photo to the floor: quality by
        # quality upward, scoring the worst photos at q50 first and stopping at the
        # first that misses (scores rise with quality).
        order = sorted(q50, key=lambda s: q50[s]["score"])
        fixed = None
        for q in range(51, 96):
            rows = convert(binary, work / f"q{q}", ["--quality", str(q)], photos)
            missed = False
            for i in range(0, len(order), max(jobs, 1)):
                batch = order[i : i + max(jobs, 1)]
                score_all(pool, rows, batch)
                if any(rows[s]["score"] < floor for s in batch):
                    missed = True
                    break
            if not missed:
                fixed = (q, rows)
                break
        if fixed:
            table(f"Smallest fixed quality with every photo ≥ T − 1: q{fixed[0]}", fixed[1], floor)

        a80 = convert(binary, work / "auto80", ["--quality", "auto:80"], photos)
        score_all(pool, a80)
        table("quality=auto:80", a80, 79)

        capped = convert(binary, work / "cap", ["--max-bytes", "150000"], photos)
        table("max_bytes=150000 (quality 50 asked)", capped)

    print("\n### Targets (issue 18, point 4)\n")
    auto_bytes, q50_bytes = total(auto, "bytes"), total(q50, "bytes")
    worst = min(r["score"] for r in auto.values())
    verdict(worst >= floor, f"auto:{target}: every photo ≥ T − 1 = {floor:.2f} (lowest {worst:.2f})")
    verdict(
        auto_bytes <= 1.05 * q50_bytes,
        f"auto:{target} bytes {auto_bytes} = {auto_bytes / q50_bytes:.3f}× fixed q50's {q50_bytes} (≤ 1.05×)",
    )
    if fixed:
        fixed_bytes = total(fixed[1], "bytes")
        verdict(
            auto_bytes <= 0.85 * fixed_bytes,
            f"auto:{target} bytes = {auto_bytes / fixed_bytes:.3f}× those of q{fixed[0]} ({fixed_bytes}),"
            " the smallest fixed quality with every photo ≥ T − 1 (≤ 0.85×)",
        )
    else:
        verdict(False, "no fixed quality up to 95 gets every photo to T − 1")
    worst80 = min(r["score"] for r in a80.values())
    verdict(worst80 >= 79, f"auto:80: every photo ≥ 79 (lowest {worst80:.2f})")
    biggest = max(r["bytes"] for r in capped.values())
    downscaled = sum(r["downscaled"] for r in capped.values())
    verdict(biggest <= 150_000, f"max_bytes=150000: largest output {biggest} bytes ({downscaled} downscaled)")
    ratio = total(auto, "cpu_ms") / total(q50, "cpu_ms")
    verdict(
        ratio <= 4.0,
        f"CPU per photo with auto:{target} = {ratio:.2f}× fixed q50's"
        f" ({total(auto, 'cpu_ms') / len(auto):.0f} ms vs {total(q50, 'cpu_ms') / len(q50):.0f} ms; ≤ 4×)",
    )
    # The product scores photos over 2.5 MP at half size; its score next to the
    # independent full-scale one, by scale.
    for label, pick in (("≤ 2.5 MP (scored at full size)", lambda r: r["width"] * r["height"] <= 2_500_000),
                        ("> 2.5 MP (scored at half size)", lambda r: r["width"] * r["height"] > 2_500_000)):
        diffs = [r["own_score"] - r["score"] for r in [*auto.values(), *a80.values()]
                 if pick(r) and r["own_score"] is not None]
        if diffs:
            print(
                f"- own score − independent score, photos {label}: mean {statistics.mean(diffs):+.2f},"
                f" from {min(diffs):+.2f} to {max(diffs):+.2f} ({len(diffs)} outputs)"
            )


if __name__ == "__main__":
    main()
