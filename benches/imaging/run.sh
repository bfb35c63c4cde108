#!/usr/bin/env bash
# Imaging benchmark (issue 4): one core, the corpus' photographic JPEGs, quality 50.
#   (a) Pillow: decode + save, timed in-process (decode + encode only);
#   (b) pixbatch's general path: `pixbatch convert --threads 1 --no-fast-path`;
#   (c) pixbatch's default: the coefficient-domain fast path where it applies;
# then the corpus' other input classes (var_*: PNG, GIF, WebP, gray, CMYK, EXIF
# orientation, ICC...), each against Pillow doing what pixbatch does to them.
# Each is run 5 times, interleaved (the machine is shared and noisy); each file's
# fastest run counts. Prints Markdown tables: speed, bytes and PSNR against the original.
#
# Usage: benches/imaging/run.sh   (or `just bench-imaging`)
# Env: BENCH_CORPUS (default ../shared/corpus from the repo root), BENCH_PYTHON (a
# python3 that already has Pillow and numpy: skips the throwaway venv),
# PIXBATCH_BIN (skips the build), BENCH_REPS (default 5), BENCH_QUALITY (default 50),
# BENCH_LIBJPEG=system (build with a nasm on PATH; by default it is hidden, the
# toolchain-only build).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=benches/imaging

reps=${BENCH_REPS:-5}
quality=${BENCH_QUALITY:-50}
bench="imaging bench"
requirements=$here/requirements.txt
# shellcheck source=benches/imaging/common.sh
source "$here/common.sh"

echo "imaging bench: ${#photos[@]} photos, quality $quality, $reps interleaved runs, one thread"
runs=$work/runs
for key in pillow general default; do mkdir -p "$runs/$key/out"; done
for rep in $(seq 1 "$reps"); do
    "$python" "$here/pillow_ref.py" time "$runs/pillow/out" "$quality" "${photos[@]}" \
        > "$runs/pillow/$rep.tsv"
    "$PIXBATCH_BIN" convert --threads 1 --quality "$quality" --no-fast-path \
        --out "$runs/general/out" "${photos[@]}" > "$work/general.log" 2> /dev/null
    "$python" "$here/pillow_ref.py" convert-log "$work/general.log" > "$runs/general/$rep.tsv"
    "$PIXBATCH_BIN" convert --threads 1 --quality "$quality" \
        --out "$runs/default/out" "${photos[@]}" > "$work/default.log" 2> /dev/null
    "$python" "$here/pillow_ref.py" convert-log "$work/default.log" > "$runs/default/$rep.tsv"
    echo "  run $rep/$reps done"
done

echo
echo "Machine: $(nproc) cores, $(uname -m), $(date +%F); pixbatch $(grep -o 'codec=[a-z0-9]* chroma=[a-z]*' "$work/default.log" || echo 'codec=?')."
echo "Speed: megapixels per second"
echo "of decode + encode on one thread (file I/O excluded). PSNR: each output against"
echo "Pillow's decode of the original, averaged over the files."
"$python" "$here/pillow_ref.py" table "$runs" "$corpus"

# The other input classes (the corpus' var_* files: PNG, GIF, WebP, gray, CMYK, EXIF
# orientation, ICC, progressive, q30), each against Pillow doing the same work.
variants=()
for f in "$corpus"/var_*; do [ -e "$f" ] && variants+=("$f"); done
if [ ${#variants[@]} -gt 0 ]; then
    vruns=$work/variants
    for key in pillow default; do mkdir -p "$vruns/$key/out"; done
    # The second pass reads each file under another name (`convert` refuses two inputs
    # that would write one output): a link, or a copy where links cannot be made.
    mkdir -p "$work/warm"
    warm=()
    for f in "${variants[@]}"; do
        base=$(basename "$f")
        w="$work/warm/${base%.*}.warm.${base##*.}"
        ln "$f" "$w" 2> /dev/null || cp "$f" "$w"
        warm+=("$w")
    done
    for rep in $(seq 1 "$reps"); do
        "$python" "$here/pillow_ref.py" variants "$vruns/pillow/out" "$quality" "${variants[@]}" \
            > "$vruns/pillow/$rep.tsv"
        # Twice per process, the second timed: a warm process, as Pillow's loop is.
        "$PIXBATCH_BIN" convert --threads 1 --quality "$quality" \
            --out "$vruns/default/out" "${variants[@]}" "${warm[@]}" > "$work/variants.log" \
            2> "$work/variants.err" || { cat "$work/variants.err" >&2; exit 1; }
        tail -n "$((${#variants[@]} + 1))" "$work/variants.log" > "$work/variants.warm.log"
        "$python" "$here/pillow_ref.py" convert-log "$work/variants.warm.log" > "$vruns/default/$rep.tsv"
    done
    "$python" "$here/pillow_ref.py" variants-table "$vruns"
fi
