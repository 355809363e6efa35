#!/bin/sh
# Builds the Debian package with cargo-deb (installing cargo-deb first if it
# is missing) and prints the path of the .deb on the last line of stdout.
# Extra arguments go to `cargo deb` (e.g. --no-build, --fast).
set -eu

cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "cargo-deb not found: installing it (cargo install cargo-deb --locked)" >&2
    cargo install cargo-deb --locked >&2
fi

# cargo deb prints the archive path as its last line of stdout.
if ! out=$(cargo deb "$@"); then
    echo "build-deb: cargo deb failed" >&2
    exit 1
fi
deb=$(printf '%s\n' "$out" | tail -n 1)
if [ ! -f "$deb" ]; then
    echo "build-deb: cargo deb did not report a .deb (got: $deb)" >&2
    exit 1
fi
echo "$deb"
