# Shared by the imaging benchmarks (run.sh, quality.sh): sourced from the repository
# root with `bench` (the name in messages) and `requirements` (a pip requirements file)
# set. Sets `photos` (the corpus' photographic JPEGs), `work` (a temporary directory,
# removed on exit), `PIXBATCH_BIN` and `python`; exits 0 with a message when the corpus
# or a python3 with venv is missing. The build hides nasm (libjpeg's plain C), in
# target/plain-libjpeg; BENCH_LIBJPEG=system builds with what is on PATH.

corpus=${BENCH_CORPUS:-../shared/corpus}
if [ ! -d "$corpus" ]; then
    echo "$bench: no corpus at $corpus (set BENCH_CORPUS); nothing to measure."
    exit 0
fi
photos=()
for f in "$corpus"/*.jpg; do
    case "$(basename "$f")" in var_*) ;; *) [ -e "$f" ] && photos+=("$f") ;; esac
done
if [ ${#photos[@]} -eq 0 ]; then
    echo "$bench: no photographic JPEGs in $corpus; nothing to measure."
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "${PIXBATCH_BIN:-}" ]; then
    target_dir=$(cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    # The build a newcomer gets with only the Rust toolchain and a C compiler, whatever
    # this machine has: benches/no-nasm hides a real nasm from mozjpeg-sys, in a target
    # dir of its own so the usual build is left alone. BENCH_LIBJPEG=system builds
    # with whatever is on PATH instead.
    if [ "${BENCH_LIBJPEG:-plain}" = plain ]; then
        target_dir=$target_dir/plain-libjpeg
        PATH="$PWD/benches/no-nasm:$PATH" CARGO_TARGET_DIR=$target_dir cargo build --release --quiet
    else
        cargo build --release --quiet
    fi
    PIXBATCH_BIN=$target_dir/release/pixbatch
fi

if [ -n "${BENCH_PYTHON:-}" ]; then
    python=$BENCH_PYTHON
else
    echo "$bench: installing $(grep -v '^#' "$requirements" | cut -d= -f1 | paste -sd' ') into a throwaway venv..."
    if ! python3 -m venv "$work/venv" > /dev/null 2>&1; then
        echo "$bench: python3 with venv is needed for the reference" \
            "(apt-get install python3-venv, or set BENCH_PYTHON); nothing measured."
        exit 0
    fi
    "$work/venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    python=$work/venv/bin/python
fi
