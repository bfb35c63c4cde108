"""Adaptive quality benchmark: `pixbatch convert --threads 1` on the corpus photos
with fixed q50, `auto:T` (T = the median SSIMULACRA2 of fixed q50), `auto:80` and
`--max-bytes 150000`, every output scored against the source by the judge: rust-av's
`ssimulacra2` crate (benches/imaging/judge), an implementation the product does not
use, both images decoded by Pillow. Prints a Markdown table per run and PASS/MISS per
target of issue 18; exits 0 either way.

Usage: quality.py PIXBATCH_BIN JUDGE_BIN WORK_DIR PHOTO...
Env: BENCH_JOBS (parallel q50 scorings, default 1: the CPU figures come from
`convert`'s own per-thread CPU time, so scoring in parallel does not skew them).
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

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


class Reference:
    """A source photo as the judge sees it: decoded once by Pillow (libjpeg-turbo,
    as the product's own scorer decodes) to a PPM file, each output decoded the same
    way and scored against it by the judge (`judge SOURCE OUTPUT`)."""

    def __init__(self, judge, path):
        self.judge = judge
        self.dir = tempfile.TemporaryDirectory(prefix="quality-judge-")
        self.source = self._ppm(path, "source")

    def _ppm(self, path, name):
        ppm = os.path.join(self.dir.name, f"{name}.ppm")
        Image.open(path).convert("RGB").save(ppm)
        return ppm

    def score(self, path):
        output = self._ppm(path, "output")
        run = subprocess.run([self.judge, self.source, output], check=True, capture_output=True, text=True)
        os.unlink(output)
        return float(run.stdout.strip())


def score_q50(args):
    """Pass 1, one photo: its q50 output's score."""
    judge, source, output = args
    return Reference(judge, source).score(output)


def fixed_rows(binary, work, photos, cache, q):
    """Every photo converted at fixed quality `q` (each quality converted once)."""
    if q not in cache:
        cache[q] = convert(binary, work / f"q{q}", ["--quality", str(q)], photos)
    return cache[q]


def total(rows, key):
    return sum(r[key] for r in rows.values())


def table(title, rows, target=None):
    print(f"\n### {title}\n")
    print("| photo | MP | quality | tries | binding | bytes | SSIMULACRA2 (judge) | own score | CPU ms |")
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
    binary, judge, work, photos = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
    jobs = int(os.environ.get("BENCH_JOBS", "1"))
    fixed_cache = {}
    q50 = fixed_rows(binary, work, photos, fixed_cache, 50)
    stems = sorted(q50)
    # Pass 1: the q50 scores give T (one reference per photo, dropped after).
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        pairs = [(judge, q50[s]["source"], q50[s]["output"]) for s in stems]
        for s, score in zip(stems, pool.map(score_q50, pairs)):
            q50[s]["score"] = score
    scores = [r["score"] for r in q50.values()]
    median = statistics.median(scores)
    # The target itself, to the hundredth `auto:N` takes: no rounding up to a whole
    # score, which would ask more of every photo than T.
    target = f"{median:.2f}".rstrip("0").rstrip(".")
    floor = median - 1
    print(
        f"fixed q50: SSIMULACRA2 {min(scores):.1f} to {max(scores):.1f}, median T = {median:.2f};"
        f" auto target N = {target}, floor T - 1 = {floor:.2f}"
    )
    auto = convert(binary, work / "auto", ["--quality", f"auto:{target}"], photos)
    a80 = convert(binary, work / "auto80", ["--quality", "auto:80"], photos)
    capped = convert(binary, work / "cap", ["--max-bytes", "150000"], photos)

    # Pass 2, photo by photo, worst at q50 first, one reference each: the auto
    # outputs' scores, and the smallest fixed quality that gets every photo to the
    # floor: each photo is checked at the highest quality needed so far, and only a
    # photo below the floor there is searched upward (scores rise with quality).
    needed = 50
    for s in sorted(stems, key=lambda s: q50[s]["score"]):
        ref = Reference(judge, q50[s]["source"])
        auto[s]["score"] = ref.score(auto[s]["output"])
        a80[s]["score"] = ref.score(a80[s]["output"])
        def at(q, ref=ref, s=s):
            row = fixed_rows(binary, work, photos, fixed_cache, q)[s]
            row["score"] = ref.score(row["output"])
            return row["score"]

        if q50[s]["score"] >= floor or (needed > 50 and at(needed) >= floor):
            continue
        lo, hi = needed, 95  # lo misses the floor; find the lowest q in (lo, hi] that meets it
        if at(hi) < floor:
            needed = None
            break
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if at(mid) >= floor:
                hi = mid
            else:
                lo = mid
        needed = hi
    fixed = None
    if needed is not None:
        # Scores shown where the search took them; the others are above the floor
        # at a lower quality already.
        fixed = (needed, fixed_rows(binary, work, photos, fixed_cache, needed))

    table("Fixed quality 50", q50)
    table(f"quality=auto:{target}", auto, floor)
    if fixed:
        table(f"Smallest fixed quality with every photo ≥ T − 1: q{fixed[0]}", fixed[1], floor)
    table("quality=auto:80", a80, 79)
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
    # The product's own score (fast-ssim2, at full size) next to the judge's.
    diffs = [r["own_score"] - r["score"] for r in [*auto.values(), *a80.values()]
             if r["own_score"] is not None]
    if diffs:
        print(
            f"- own score − judge's score: mean {statistics.mean(diffs):+.2f},"
            f" from {min(diffs):+.2f} to {max(diffs):+.2f} ({len(diffs)} outputs)"
        )


if __name__ == "__main__":
    main()
