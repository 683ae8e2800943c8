#!/bin/bash
# Builds .carry/sandbox for `bench/device/run.sh sandboxed`: Debian's bwrap, pasta and setpriv
# (apt install bubblewrap passt util-linux) with the libraries they link, for a device that has
# none of them. bwrap and setpriv run through the device's own loader with --library-path, so
# no LD_LIBRARY_PATH reaches the replicas; pasta links only libc. Run here, then carry it:
# run(carry=[".whl", ".carry/llm/tok", ".carry/sandbox"]).
set -euo pipefail
out=.carry/sandbox
rm -rf $out && mkdir -p $out/bin $out/lib $out/fallback
cp /usr/bin/pasta $out/bin/pasta
cp /usr/bin/bwrap $out/lib/bwrap.bin
cp /usr/bin/setpriv $out/lib/setpriv.bin
for lib in libselinux.so.1 libcap.so.2 libpcre2-8.so.0 libcap-ng.so.0; do
  cp -L /lib/x86_64-linux-gnu/$lib $out/lib/
done
wrapper() {  # $1: where the wrapper goes, $2: the binary it runs
  printf '#!/bin/sh\nhere=$(dirname "$(readlink -f "$0")")/../lib\nexec /lib64/ld-linux-x86-64.so.2 --library-path "$here" "$here/%s" "$@"\n' "$2" > "$1"
  chmod +x "$1"
}
wrapper $out/bin/bwrap bwrap.bin
wrapper $out/fallback/setpriv setpriv.bin  # on PATH only where the device has no setpriv
$out/bin/bwrap --version && $out/fallback/setpriv --version
