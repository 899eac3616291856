#!/usr/bin/env bash
# Installs the Debian packages that the demo and the integration tests need,
# if a command they provide is missing. Idempotent; needs root to install.
set -euo pipefail

declare -A pkg_of=(
	[ip]=iproute2 [bridge]=iproute2 [ping]=iputils-ping [arping]=iputils-arping
	[iptables]=iptables [ndisc6]=ndisc6 [sysctl]=procps [git]=git
	[etcd]=etcd-server [dnsmasq]=dnsmasq-base
)
# `install-deps.sh e2e` adds what make e2e needs: containerd, runc,
# util-linux (nsenter, unshare), podman and a static busybox (the podman
# image).
if [ "${1:-}" = e2e ]; then
	pkg_of+=([containerd]=containerd [runc]=runc [nsenter]=util-linux [unshare]=util-linux
		[podman]=podman [busybox]=busybox-static)
fi
missing=()
for cmd in "${!pkg_of[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_of[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" ca-certificates >/dev/null
