#!/usr/bin/env bash
# The devtools image, the one agents get by default: Debian bookworm (minbase) plus
# python3 (with pip and venv), git, ripgrep, nodejs, npm, curl, ca-certificates,
# build-essential, and Python's data stack (numpy, pandas, matplotlib, openpyxl) for CSV and
# Excel analysis with charts. Its size and build time are in README.md (`make rootfs`).
# Called by rootfs/build as `devtools.sh preflight` and `devtools.sh build DIR`.
#
# The packages are installed with apt-get inside a chroot after debootstrap rather than via
# `debootstrap --include`, which leaves npm's dependencies unconfigured.
#
# Environment: CORRAL_DEBIAN_MIRROR overrides the mirror (default: the Debian mirror this
# host's apt uses, else deb.debian.org).
set -euo pipefail

suite=bookworm
packages="python3 python3-pip python3-venv git ripgrep nodejs npm curl ca-certificates build-essential"
# The data stack from Debian, not pip: built for this python3, and there without a network.
# Recommends stay out (pandas' alone would add scipy, numba, tables); matplotlib's Agg
# backend renders PNG with Pillow and the DejaVu fonts, both hard dependencies. Tk is one
# too (python3-matplotlib -> python3-pil.imagetk -> python3-tk): its libraries come along,
# unused, as pyplot falls back to Agg without a display. python3-munkres (41 KB) settles
# python3-fonttools' "python3-scipy | python3-munkres", for which apt would otherwise take
# scipy and with it pythran, the Boost headers and OpenBLAS: several hundred MB more.
packages="$packages python3-numpy python3-pandas python3-matplotlib python3-openpyxl python3-munkres"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
me="rootfs devtools"

# The Debian archive this host's apt already uses (a mirror or proxy that is known to be
# reachable from here), so the image is built from the same place. Prefers a deb822 or
# one-line source for $suite itself (not -updates/-security), else any URI ending in
# /debian, else the public redirector.
host_mirror() {
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v s="$suite" '
    BEGIN { RS = ""; FS = "\n" }
    {
      types = ""; uris = ""; suites = ""
      for (i = 1; i <= NF; i++) {
        if ($i ~ /^Types:/) types = $i
        else if ($i ~ /^URIs:/) uris = $i
        else if ($i ~ /^Suites:/) suites = $i
      }
      if (types !~ /(^|[ \t])deb([ \t]|$)/) next
      sub(/^URIs:[ \t]*/, "", uris); split(uris, u, /[ \t]+/)
      if ((" " suites " ") ~ ("[ \t]" s "[ \t]")) { print u[1]; exit }
    }')
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -e 's/\[[^]]*\]//' | awk -v s="$suite" '$1 == "deb" && $3 == s { print $2; exit }')
  fi
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
      /etc/apt/sources.list.d/*.list 2>/dev/null | grep -oE 'https?://[^ ]*/debian/?' | head -n1)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}
mirror=${CORRAL_DEBIAN_MIRROR:-$(host_mirror)}
mirror=${mirror%/}

# Tools this recipe runs, each with the Debian package that provides it. All missing ones
# are named at once, so one apt-get fixes them.
missing_tools="" missing_pkgs=""
need_tool() {
  local path
  # (bash's command -v also reports a non-executable file when nothing better is on PATH)
  path=$(command -v "$1" 2>/dev/null) && [ -x "$path" ] && return 0
  missing_tools="$missing_tools${missing_tools:+, }$1"
  case " $missing_pkgs " in *" $2 "*) ;; *) missing_pkgs="$missing_pkgs $2" ;; esac
}

preflight() {
  [ "$(id -u)" -eq 0 ] || { echo "$me: must run as root (debootstrap and chroot need it)" >&2; exit 1; }
  need_tool debootstrap debootstrap
  need_tool wget wget        # debootstrap downloads with wget; we probe the mirror with it
  need_tool chroot coreutils
  need_tool mount mount
  need_tool umount mount
  need_tool setsid util-linux
  if [ ! -f "$keyring" ]; then
    missing_tools="$missing_tools${missing_tools:+, }$keyring"
    missing_pkgs="$missing_pkgs debian-archive-keyring"
  fi
  if [ -n "$missing_pkgs" ]; then
    echo "$me: missing $missing_tools (apt-get install$missing_pkgs)" >&2
    exit 1
  fi
  # One cheap request now gives a clear message instead of debootstrap's retries and
  # a long log. (debootstrap's own failures are classified too, below.)
  if ! wget -q -T 15 -t 2 -O /dev/null "$mirror/dists/$suite/Release"; then
    echo "$me: cannot reach the Debian mirror $mirror (no network?); set CORRAL_DEBIAN_MIRROR to use another" >&2
    exit 1
  fi
}

# Unmounts everything at or below $1, deepest first (/proc, and whatever debootstrap
# mounted if it was interrupted), so nothing stays mounted in a tree that rootfs/build
# is about to delete or rename into place.
umount_under() {
  local dir=$1 m
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" || echo "$me: cannot unmount $m" >&2
    done
}

stage_no=0 stage_start=$SECONDS
stage() {
  stage_no=$((stage_no + 1)) stage_start=$SECONDS
  echo "$me: [$stage_no/4] $*"
}
stage_done() { echo "$me:       ... done in $((SECONDS - stage_start)) s"; }

# Names the cause of a failed step from its log, in one line: the network and the disk
# are what usually fail; anything else gets the log's tail.
fail() {
  local what=$1
  if grep -qE "Couldn't download|Failed getting release|Failed to fetch|Temporary failure resolving|Could not resolve|Could not connect|Connection refused|Unable to connect|Connection timed out" "$log"; then
    echo "$me: $what failed: could not download from the Debian mirror $mirror (no network, or the mirror lacks the files?); log: $log" >&2
  elif grep -q "No space left on device" "$log"; then
    echo "$me: $what failed: no space left on the device holding $root; log: $log" >&2
  else
    tail -n 15 "$log" | sed 's/^/    /' >&2
    echo "$me: $what failed; full log: $log" >&2
  fi
  exit 1
}

# Progress: the full output goes to the log; the terminal gets the stage lines of
# debootstrap (not one line per package) and of apt a summary with a running count.
show_debootstrap() {
  # Per-package lines ("I: Extracting bash...", "I: Retrieving bash 5.2-15") are counted;
  # phase lines ("I: Unpacking required packages...") are shown, with the counts so far.
  awk 'function flush_count() {
         if (n) { v = verb; sub(/ing$/, "ed", v); print "      (" v " " n " packages)"; n = 0 } }
       $1 == "I:" && (($2 ~ /^(Extracting|Unpacking|Configuring)$/ && NF == 3 && $3 ~ /\.\.\.$/) ||
                      ($2 ~ /^(Retrieving|Validating)$/ && NF == 4)) {
         if ($2 == "Validating") next
         if (tolower($2) != verb) flush_count()
         verb = tolower($2); n++; next }
       /^[IWE]: / { flush_count(); print "    " $0; fflush() }
       END { flush_count() }'
}
show_apt() {
  awk '/newly installed|^Need to get|^After this operation|^Fetched/ { print "    " $0; fflush() }
       /^Setting up / { n++; if (n % 50 == 0) { print "    set up " n " packages"; fflush() } }
       /^E: / { print "    " $0; fflush() }
       END { if (n) print "    set up " n " packages" }'
}

# Runs a command inside the image with a clean environment (nothing from the host's,
# e.g. its PATH or locale, should leak into maintainer scripts).
in_root() {
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive chroot "$root" "$@"
}

build() {
  root=$1
  log=$(mktemp "${TMPDIR:-/tmp}/corral-rootfs-devtools.XXXXXX.log")
  on_exit() {
    local status=$?
    trap - EXIT INT TERM HUP
    umount_under "$root"
    if [ "$status" -eq 0 ]; then rm -f "$log"; fi
    exit "$status"
  }
  # INT/TERM/HUP become an ordinary exit so the EXIT trap unmounts on every path.
  trap on_exit EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP

  stage "debootstrap --variant=minbase $suite from $mirror (log: $log)"
  # (pipefail: the pipeline fails if debootstrap does; `if` keeps set -e from exiting
  # before fail can name the cause.)
  if ! debootstrap --variant=minbase --components=main --keyring="$keyring" \
      "$suite" "$root" "$mirror" 2>&1 | tee -a "$log" | show_debootstrap; then
    fail debootstrap
  fi
  stage_done

  stage "apt-get install $packages"
  # apt needs /proc (dpkg and maintainer scripts read it); it is unmounted by the EXIT
  # trap on every path, before rootfs/build renames or deletes the tree.
  mount -t proc proc "$root/proc"
  # Keep maintainer scripts from starting services inside the chroot.
  printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  local apt_opts="-q -y -o Dpkg::Use-Pty=0 -o Acquire::Retries=3"
  # shellcheck disable=SC2086 # word splitting of the option and package lists is wanted
  if ! { in_root apt-get $apt_opts update &&
          in_root apt-get $apt_opts install --no-install-recommends $packages; } 2>&1 |
       tee -a "$log" | show_apt; then
    fail "apt-get install"
  fi
  stage_done

  stage "cleaning apt caches and lists"
  in_root apt-get -q clean >>"$log" 2>&1 || fail "apt-get clean"
  rm -f "$root/usr/sbin/policy-rc.d"
  umount_under "$root"
  # The image is read-only in the sandbox; package lists and downloaded .debs are dead
  # weight (an agent that needs apt runs apt-get update first, as in any container).
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
    "$root"/var/log/apt/* "$root"/var/log/dpkg.log "$root"/var/log/alternatives.log \
    "$root"/var/log/bootstrap.log
  mkdir -p "$root/var/lib/apt/lists/partial"
  stage_done

  # Informational; rootfs/check is the real test of the finished image.
  stage "versions"
  # shellcheck disable=SC2016 # expanded by the image's sh
  in_root sh -c 'python3 --version; echo "node $(node --version)"; echo "npm $(npm --version)";
    git --version; rg --version | head -n1;
    dpkg-query -W -f "\${Package} \${Version}\n" python3-numpy python3-pandas python3-matplotlib python3-openpyxl' |
    sed 's/^/    /'
  stage_done
}

case "${1:-}" in
  preflight) preflight ;;
  build) [ $# -eq 2 ] || { echo "usage: devtools.sh build DIR" >&2; exit 2; }; build "$2" ;;
  *) echo "usage: devtools.sh {preflight|build DIR}" >&2; exit 2 ;;
esac
