#!/usr/bin/env bash
# The minimal image: a static busybox and its applets. Builds in about a second; most tests
# use it. Called by rootfs/build as `minimal.sh preflight` and `minimal.sh build DIR`.
set -euo pipefail

# A dynamically linked busybox would need the host's libc inside the image; only the
# static one (package busybox-static, which installs /bin/busybox) works on its own.
find_busybox() {
  local b
  for b in $(command -v busybox || true) /bin/busybox; do
    if [ -x "$b" ] && file -L "$b" 2>/dev/null | grep -q "statically linked" &&
       "$b" --list >/dev/null 2>&1; then
      echo "$b"
      return 0
    fi
  done
  echo "rootfs minimal: a static busybox is not installed (apt-get install busybox-static)" >&2
  return 1
}

case "${1:-}" in
  preflight)
    command -v file >/dev/null || {
      echo "rootfs minimal: 'file' is not installed (apt-get install file)" >&2; exit 1; }
    find_busybox >/dev/null
    ;;
  build)
    root=$2
    busybox=$(find_busybox)
    echo "rootfs minimal: installing $busybox and its applets"
    mkdir -p "$root/bin" "$root/usr/bin" "$root/sbin" "$root/usr/sbin"
    install -m 0755 "$busybox" "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
      [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    ln -s ../../bin/env "$root/usr/bin/env"
    ;;
  *) echo "usage: minimal.sh {preflight|build DIR}" >&2; exit 2 ;;
esac
