#!/bin/sh
# The Debian/Ubuntu packages the project uses when it can, installed when this runs as root with apt-get:
#   libtcmalloc-minimal4  model calls on CPU ~30 % faster than under glibc malloc (BENCHMARKS.md "Heap allocator")
#   chromium chromium-driver  the headless browser the web page's tests drive (tests/web; `make test`)
#   fonts-noto-color-emoji    the page's 🎲 in that browser (and in the screenshot docs/web.png)
# Elsewhere it says what to install and carries on: nothing here is required to run.
set -u
missing=""
for pkg in libtcmalloc-minimal4 chromium chromium-driver fonts-noto-color-emoji; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  if apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 \
     || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1; }; then
    echo "installed:$missing" >&2
    exit 0
  fi
fi
echo "note: not installed:$missing (as root: apt-get install$missing); without tcmalloc model calls on CPU run" \
  "~30 % slower, without chromium the web page's browser tests are skipped" >&2
exit 0
