#!/usr/bin/env python3
"""Imaging benchmark helper (run by run.sh; needs Pillow and numpy).

    pillow_ref.py time OUTDIR QUALITY FILE...
        Pillow reference: decode + save at QUALITY (Pillow's defaults: 4:2:0,
        standard Huffman tables), timed in-process around decode + encode only
        (file reading and writing excluded). Writes OUTDIR/<stem>.jpg and prints
        one line per file: name, megapixels, seconds, bytes.

    pillow_ref.py variants OUTDIR QUALITY FILE...
        As `time`, for inputs of every class (PNG, GIF, WebP, gray, CMYK, EXIF
        orientation, ICC): Pillow does what pixbatch does to them (first frame, EXIF
        orientation applied, ICC profile converted to sRGB with ImageCms, alpha
        flattened onto white, everything made 8-bit RGB or gray) before saving.

    pillow_ref.py variants-table RUNS_DIR
        RUNS_DIR/{pillow,default}/<rep>.tsv from the commands above: one row per
        file, the fastest repetition of each, and the ratio.

    pillow_ref.py convert-log LOG
        Turns the per-file lines of `pixbatch convert` into the same format
        (seconds = the transform's own time, file I/O excluded).

    pillow_ref.py table RUNS_DIR CORPUS_DIR
        RUNS_DIR/<path>/<rep>.tsv from the two commands above and RUNS_DIR/<path>/out/
        holding each path's outputs: prints a Markdown table per file set, with PSNR
        of every output against Pillow's decode of the original. Time per file is
        its fastest repetition (the machine is shared: this filters out the moments
        another process had the core), summed over the set.
"""

import io
import os
import sys
import time


def cmd_time(outdir, quality, files):
    from PIL import Image

    os.makedirs(outdir, exist_ok=True)
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        start = time.perf_counter()
        im = Image.open(io.BytesIO(data))
        im.load()
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        seconds = time.perf_counter() - start
        out = buf.getvalue()
        name = os.path.splitext(os.path.basename(path))[0]
        with open(os.path.join(outdir, name + ".jpg"), "wb") as f:
            f.write(out)
        print(f"{name}\t{im.width * im.height / 1e6:.6f}\t{seconds:.6f}\t{len(out)}\t")


def pillow_like_pixbatch(data, quality):
    from PIL import Image, ImageCms, ImageOps

    im = Image.open(io.BytesIO(data))
    im.load()
    im = ImageOps.exif_transpose(im)
    icc = im.info.get("icc_profile")
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if has_alpha:
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im).convert("RGB")
    elif im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    if icc and im.mode == "RGB":
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        im = ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return im, buf.getvalue()


def cmd_variants(outdir, quality, files):
    os.makedirs(outdir, exist_ok=True)
    # A warm process, as pixbatch's is: the first use of a plugin or of ImageCms
    # imports and initialises it.
    for path in files:
        with open(path, "rb") as f:
            pillow_like_pixbatch(f.read(), quality)
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        start = time.perf_counter()
        im, out = pillow_like_pixbatch(data, quality)
        seconds = time.perf_counter() - start
        name = os.path.splitext(os.path.basename(path))[0]
        with open(os.path.join(outdir, name + ".jpg"), "wb") as f:
            f.write(out)
        print(f"{name}\t{im.width * im.height / 1e6:.6f}\t{seconds:.6f}\t{len(out)}\t")


def cmd_variants_table(runs_dir):
    runs = {key: read_runs(os.path.join(runs_dir, key)) for key in ("pillow", "default")}
    reps = len(runs["pillow"])
    print(f"\nother input classes: one file each, one thread, fastest of {reps} per file\n")
    print("| file | MP | Pillow ms | pixbatch ms | × Pillow | Pillow bytes | pixbatch bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    slowest = None
    for name in sorted(runs["pillow"][0]):
        mp = runs["pillow"][0][name][0]
        best = {key: min(run[name][1] for run in runs[key] if name in run) for key in runs}
        ratio = best["pillow"] / best["default"]
        slowest = ratio if slowest is None else min(slowest, ratio)
        print(
            f"| {name} | {mp:.2f} | {best['pillow'] * 1e3:.1f} | {best['default'] * 1e3:.1f} "
            f"| {ratio:.2f} | {runs['pillow'][0][name][2]} | {runs['default'][0][name][2]} |"
        )
    if slowest is not None:
        verdict = "PASS" if slowest >= 1.0 else "MISS"
        print(f"\nslowest class × Pillow: {slowest:.2f} (target ≥ 1.00): {verdict}")


def cmd_convert_log(log):
    # <path>\tok\tJpeg WxH\tIN -> OUT bytes\tqQ\tMS ms[\tkept original|\tfast path]
    with open(log) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 6 or parts[1] != "ok":
                continue
            name = os.path.splitext(os.path.basename(parts[0]))[0]
            # run.sh's second, warm pass reads each file as NAME.warm.EXT.
            name = name.removesuffix(".warm")
            w, h = parts[2].split()[-1].split("x")
            out_bytes = parts[3].split("->")[1].split()[0]
            ms = float(parts[5].split()[0])
            note = parts[6] if len(parts) > 6 else ""
            print(f"{name}\t{int(w) * int(h) / 1e6:.6f}\t{ms / 1000:.6f}\t{out_bytes}\t{note}")


def read_runs(path_dir):
    runs = []
    for entry in sorted(os.listdir(path_dir)):
        if not entry.endswith(".tsv"):
            continue
        rows = {}
        with open(os.path.join(path_dir, entry)) as f:
            for line in f:
                name, mp, secs, size, note = line.rstrip("\n").split("\t")
                rows[name] = (float(mp), float(secs), int(size), note)
        runs.append(rows)
    return runs


def cmd_table(runs_dir, corpus):
    import numpy as np
    from PIL import Image

    paths = [
        ("Pillow (reference)", "pillow"),
        ("pixbatch general path", "general"),
        ("pixbatch default (fast path where it applies)", "default"),
    ]
    runs = {key: read_runs(os.path.join(runs_dir, key)) for _, key in paths}
    names = sorted(runs["pillow"][0])

    def sampling(name):
        # Chroma subsampling from the SOF of the original.
        with open(os.path.join(corpus, name + ".jpg"), "rb") as f:
            b = f.read()
        i = 2
        while i < len(b) - 4:
            if b[i] != 0xFF:
                i += 1
                continue
            m = b[i + 1]
            if m in (0xC0, 0xC1, 0xC2):
                n = b[i + 9]
                f = [(b[i + 11 + 3 * k] >> 4, b[i + 11 + 3 * k] & 15) for k in range(n)]
                return {((2, 2), (1, 1)): "4:2:0", ((2, 1), (1, 1)): "4:2:2"}.get((f[0], f[1]), "other")
            if m == 0xD8 or m == 0x01 or 0xD0 <= m <= 0xD7:
                i += 2
                continue
            i += 2 + int.from_bytes(b[i + 2 : i + 4], "big")
        return "other"

    def pixels(path):
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)

    psnr = {}
    for name in names:
        ref = pixels(os.path.join(corpus, name + ".jpg"))
        for _, key in paths:
            out = pixels(os.path.join(runs_dir, key, "out", name + ".jpg"))
            mse = float(np.mean((ref - out) ** 2))
            psnr[key, name] = 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))

    sets = [
        ("all photographic JPEGs", names),
        ("4:2:0 sources", [n for n in names if sampling(n) == "4:2:0"]),
        ("other sources (4:2:2, 4:4:4)", [n for n in names if sampling(n) != "4:2:0"]),
    ]
    for title, subset in sets:
        if not subset:
            continue
        mp = sum(runs["pillow"][0][n][0] for n in subset)
        reps = len(runs["pillow"])
        print(f"\n{title}: {len(subset)} files, {mp:.1f} MP, one thread, fastest of {reps} per file\n")
        print("| path | MP/s per core | × Pillow | bytes out | vs Pillow | mean PSNR dB | Δ PSNR | fast path |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        base = None
        for label, key in paths:
            best = sum(min(run[n][1] for run in runs[key]) for n in subset)
            speed = mp / best
            size = sum(runs[key][0][n][2] for n in subset)
            mean_psnr = float(np.mean([psnr[key, n] for n in subset]))
            fast = sum(1 for n in subset if runs[key][0][n][3] == "fast path")
            if base is None:
                base = (speed, size, mean_psnr)
            print(
                f"| {label} | {speed:.1f} | {speed / base[0]:.2f} | {size} "
                f"| {100 * (size / base[1] - 1):+.1f} % | {mean_psnr:.2f} "
                f"| {mean_psnr - base[2]:+.2f} | {fast}/{len(subset)} |"
            )


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "time":
        cmd_time(args[0], int(args[1]), args[2:])
    elif cmd == "variants":
        cmd_variants(args[0], int(args[1]), args[2:])
    elif cmd == "variants-table":
        cmd_variants_table(args[0])
    elif cmd == "convert-log":
        cmd_convert_log(args[0])
    elif cmd == "table":
        cmd_table(args[0], args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
