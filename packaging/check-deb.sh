#!/bin/sh
# Builds the .deb and checks what it installs: the binary, the unit, the
# example configuration (marked as a conffile), the logrotate rule, the
# maintainer scripts, and that the shipped configuration is the commented
# example. Exits non-zero, naming what is wrong, on any mismatch.
set -eu

cd "$(dirname "$0")/.."

if ! out=$(sh packaging/build-deb.sh "$@"); then
    echo "check-deb: FAILED: no package was built" >&2
    exit 1
fi
deb=$(printf '%s\n' "$out" | tail -n 1)
echo "checking $deb"

listing=$(dpkg-deb -c "$deb")
info=$(dpkg-deb -I "$deb")
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles)

fail=0
expect_file() { # path mode
    line=$(printf '%s\n' "$listing" | awk -v p="./$1" '$NF == p')
    if [ -z "$line" ]; then
        echo "MISSING in package: /$1" >&2
        fail=1
    elif [ "${line%% *}" != "$2" ]; then
        echo "WRONG MODE for /$1: ${line%% *} (expected $2)" >&2
        fail=1
    fi
}
expect_file usr/bin/metricsd -rwxr-xr-x
expect_file lib/systemd/system/metricsd.service -rw-r--r--
expect_file etc/metricsd/metricsd.toml -rw-r--r--
expect_file etc/logrotate.d/metricsd -rw-r--r--
expect_file usr/share/doc/metricsd/README.md -rw-r--r--

if ! printf '%s\n' "$conffiles" | grep -qx '/etc/metricsd/metricsd.toml'; then
    echo "NOT A CONFFILE: /etc/metricsd/metricsd.toml (conffiles: $conffiles)" >&2
    fail=1
fi
for script in postinst prerm postrm; do
    if ! printf '%s\n' "$info" | grep -Eq "^ +[0-9]+ bytes, +[0-9]+ lines +\* +$script "; then
        echo "MISSING maintainer script: $script" >&2
        fail=1
    fi
done
# ExecReload=/bin/kill: procps ships it on Debian, and a minimal system lacks it.
if ! dpkg-deb -f "$deb" Depends | tr ',' '\n' | grep -Eq '^ *procps( |$)'; then
    echo "MISSING dependency: procps (for ExecReload=/bin/kill); Depends: $(dpkg-deb -f "$deb" Depends)" >&2
    fail=1
fi
if ! printf '%s\n' "$info" | grep -q '^ Package: metricsd$'; then
    echo "WRONG package name in control" >&2
    fail=1
fi

# The packaged files are the ones in the tree, byte for byte.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
for pair in \
    "systemd/metricsd.service:lib/systemd/system/metricsd.service" \
    "packaging/metricsd.toml:etc/metricsd/metricsd.toml" \
    "packaging/logrotate/metricsd:etc/logrotate.d/metricsd"; do
    src=${pair%%:*}
    dst=${pair#*:}
    if ! cmp -s "$src" "$tmp/$dst"; then
        echo "DIFFERS from $src: /$dst" >&2
        fail=1
    fi
done
# The maintainer scripts are the tree's, byte for byte.
ctrl="$tmp/DEBIAN"
dpkg-deb -e "$deb" "$ctrl"
for script in postinst prerm postrm; do
    if ! cmp -s "packaging/debian/$script" "$ctrl/$script"; then
        echo "DIFFERS from packaging/debian/$script: the package's $script" >&2
        fail=1
    fi
done
if ! printf '%s\n' "$conffiles" | grep -qx '/etc/logrotate.d/metricsd'; then
    echo "NOT A CONFFILE: /etc/logrotate.d/metricsd (conffiles: $conffiles)" >&2
    fail=1
fi
# The packaged binary is this tree's version.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
if ! "$tmp/usr/bin/metricsd" --version | grep -q " $version\$"; then
    echo "packaged binary is not version $version: $("$tmp/usr/bin/metricsd" --version)" >&2
    fail=1
fi
# The packaged binary runs and validates the packaged (all-default) configuration.
if ! "$tmp/usr/bin/metricsd" --config "$tmp/etc/metricsd/metricsd.toml" check-config >/dev/null; then
    echo "packaged binary rejects the packaged configuration" >&2
    fail=1
fi

if [ "$fail" -ne 0 ]; then
    echo "check-deb: FAILED for $deb" >&2
    exit 1
fi
echo "check-deb: OK ($deb)"
