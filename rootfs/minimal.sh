#!/usr/bin/env bash
# The minimal image: a static busybox and its applets. Builds in about a second; most tests
# use it. Called by rootfs/build with the staging directory.
set -euo pipefail
root=$1
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && file -L "$busybox" 2>/dev/null | grep -q "statically linked" || busybox=/bin/busybox
if ! "$busybox" --list >/dev/null 2>&1; then
  echo "rootfs minimal: busybox-static is not installed (apt-get install busybox-static)" >&2
  exit 1
fi
install -m 0755 "$busybox" "$root/bin/busybox"
mkdir -p "$root/usr/bin" "$root/sbin" "$root/usr/sbin"
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
ln -s ../../bin/env "$root/usr/bin/env"
