#!/usr/bin/env bash
# Installs what t2cp-ar needs on a fresh Debian machine, then builds it.
# Idempotent and quiet when everything is already there; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=(libpcap-dev libssl-dev libnetfilter-queue-dev libmnl-dev libbpf-dev nftables iptables iproute2 tcpdump ethtool g++ make python3 kmod clang libclang-rt-14-dev keepalived librsvg2-bin
  pacemaker corosync pacemaker-cli-utils resource-agents iputils-ping
  postgresql redis-server redis-tools memcached libmemcached-tools nginx-light openssh-server openssh-client curl libfaketime kamailio sip-tester prometheus debootstrap systemd-container rtpengine-daemon
  dpkg-dev man-db)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "t2cp setup: missing Debian packages: ${missing[*]}; run as root or: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "t2cp setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The Pacemaker test runs its own nodes in namespaces: installing corosync and pacemaker must not
  # start the system's cluster (Debian starts it with a one-node default config); nor postgresql its
  # `main` cluster on port 5432, nor redis, memcached, nginx, sshd, kamailio, rtpengine or prometheus their system service (the
  # PostgreSQL and compatibility tests run their own servers, with their own configuration, in
  # namespaces; they never use the system's). policy-rc.d
  # (exit 101: action forbidden) stops maintainer scripts from starting services, for this install only.
  guard=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\n# t2cp setup: no service starts during its apt-get install\nexit 101\n' >"$guard"
    chmod 755 "$guard"
    trap 'rm -f "$guard"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$guard" ]; then rm -f "$guard"; trap - EXIT; fi
fi

# npm packages: install when absent or when package.json changed since.
if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "t2cp setup: npm install"
  npm install --no-audit --no-fund --loglevel=error
fi

# Addon and TypeScript: rebuild when a source is newer than the output.
addon=build/Release/t2cp.node
if [ ! -f "$addon" ] || [ -n "$(find addon binding.gyp -newer "$addon" -print -quit)" ]; then
  echo "t2cp setup: building the native addon"
  npx --no-install node-gyp rebuild --nodedir=/usr --loglevel=error >/dev/null
fi
stamp=dist/.built
if [ ! -f "$stamp" ] || [ -n "$(find src scripts bench tsconfig.json -name '*.ts' -newer "$stamp" -print -quit 2>/dev/null)" ] || [ tsconfig.json -nt "$stamp" ]; then
  echo "t2cp setup: compiling TypeScript"
  npx --no-install tsc -p .
  touch "$stamp"
fi

# Receive buffers: the backup's control socket asks for 8 MiB (the recorder's resupply bursts),
# the tests' UDP replicas as much (datagrams held behind a lost one, given at once); the kernel
# caps both at net.core.rmem_max (Debian's default 208 KiB). The package ships the same setting.
rmem_want=$(sed -n 's/^net.core.rmem_max = //p' deploy/sysctl/60-t2cp-ar.conf)
rmem_have=$(cat /proc/sys/net/core/rmem_max)
if [ "$rmem_have" -lt "$rmem_want" ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "t2cp setup: net.core.rmem_max $rmem_have -> $rmem_want (deploy/sysctl/60-t2cp-ar.conf)"
    echo "$rmem_want" >/proc/sys/net/core/rmem_max
  else
    echo "t2cp setup: net.core.rmem_max is $rmem_have: as root, sysctl -w net.core.rmem_max=$rmem_want" >&2
  fi
fi

# Connection-storm load generator (bench/storm, C, into build/storm/): rebuild when a source is
# newer than a binary (make -q answers that from bench/storm/Makefile).
if ! make -s -q -C bench/storm 2>/dev/null; then
  echo "t2cp setup: building the connection-storm load generator"
  make -s -C bench/storm >/dev/null
fi
