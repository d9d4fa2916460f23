# Common settings of the lab's host-side scripts. Source it: . "$(dirname "$0")/lib.sh"
#
# Everything is built under $LAB, outside the tree (default ~/.cache/pciback-lab), from Debian
# packages (apt-get download, mmdebstrap or debootstrap) and PyPI (pip download) only; nothing
# is installed on the host but the host tools README.md lists.
set -euo pipefail
LAB=${LAB:-${XDG_CACHE_HOME:-$HOME/.cache}/pciback-lab}
HOST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_DIR=$(dirname "$HOST_DIR")           # lab/ in the tree
TREE=$(dirname "$LAB_DIR")               # the project's working tree
SUITE=${SUITE:-bookworm}
# The Debian mirrors this machine's apt already uses (deb822 .sources or one-line lists).
apt_uri() {  # $1: a regex the URI must match
  { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{for (i=2;i<=NF;i++) print $i}' || true
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}' || true
  } | grep -E "$1" | head -n 1 || true; }
MIRROR=${MIRROR:-$(apt_uri 'debian/?$')}
SECURITY_MIRROR=${SECURITY_MIRROR:-$(apt_uri 'debian-security/?$')}
[ -n "$MIRROR" ] || { echo "no Debian mirror found in apt's sources: set MIRROR" >&2; exit 1; }
XEN_PKG=${XEN_PKG:-xen-hypervisor-4.17-amd64}
# The kernel: the one linux-image-amd64 points at (a linux-image-6.1.0-N-amd64).
kernel_pkg() { apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-6/{print $2; exit}'; }
kver() { ls "$LAB/kernel/lib/modules" | head -1; }
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || { echo "the lab needs root (chroot, mke2fs -d of a root-owned tree)" >&2; exit 2; }; }
mkdir -p "$LAB"
