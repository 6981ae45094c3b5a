#!/usr/bin/env bash
# Stand-ins, built from Debian's packages, for the images deploy/ pulls from Docker Hub, for a machine
# that has a Docker engine and a Debian mirror but no route to Docker Hub (CI here). Each is tagged
# with the exact name deploy/ uses, so deploy/Dockerfile and deploy/compose/compose.yaml run unchanged:
#
#   local/debian:bookworm       debootstrap --variant=minbase bookworm, imported (the base of the rest)
#   python:3.11.x-slim-bookworm the FROM of deploy/Dockerfile: Debian's python3 (3.11), pip, venv
#   redis:…, prom/alertmanager:…, prom/prometheus:…   the images of deploy/compose/compose.yaml
#
# Usage: deploy/ci/stand-ins.sh [python|compose|all]   (default: all; run as root: debootstrap)
# Each image carries a label with the hash of what it is made from (this script, its Dockerfile, the
# mirror, the CA certificates); an image whose label matches is kept, so a rerun takes a second.
# An image of that name that is not a stand-in (a real pull) is left alone, and then neither the base
# nor debootstrap is needed. The lock and the
# debootstrap scratch space live outside any checkout (DEPLOY_CACHE_DIR, else $XDG_CACHE_HOME, else
# /var/cache when writable, else ~/.cache).
#
# Environment: DEBIAN_MIRROR (default: the first URIs: of /etc/apt/sources.list.d/debian.sources, else
# deb.debian.org), DEBIAN_SUITE (bookworm), CA_CERTS_DIR (/usr/local/share/ca-certificates).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
deploy=$(dirname "$here")
what=${1:-all}
case $what in python | compose | all) ;; *) echo "usage: $0 [python|compose|all]" >&2; exit 2 ;; esac

suite=${DEBIAN_SUITE:-bookworm}
if [[ -z ${DEBIAN_MIRROR:-} && -r /etc/apt/sources.list.d/debian.sources ]]; then
  DEBIAN_MIRROR=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [[ -z ${DEBIAN_MIRROR:-} && -r /etc/apt/sources.list ]]; then
  DEBIAN_MIRROR=$(awk '$1 == "deb" && $3 == "'"$suite"'" {print $2; exit}' /etc/apt/sources.list)
fi
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
certs=${CA_CERTS_DIR:-/usr/local/share/ca-certificates}

if [[ -n ${DEPLOY_CACHE_DIR:-} ]]; then
  cache=$DEPLOY_CACHE_DIR
elif [[ -n ${XDG_CACHE_HOME:-} ]]; then
  cache=$XDG_CACHE_HOME/alert-ticket-bridge
elif [[ -w /var/cache ]]; then
  cache=/var/cache/alert-ticket-bridge
else
  cache=$HOME/.cache/alert-ticket-bridge
fi
mkdir -p "$cache"
exec 9>"$cache/stand-ins.lock"
flock 9 # two runs at once (a test run and a fresh clone's) build each image once

label=org.alert-ticket-bridge.stand-in
say() { echo "stand-ins: $*" >&2; }

# The hash of what an image is made from: this script, the given files, the mirror and suite.
recipe() { { cat "$0" "$@"; echo "$mirror $suite"; } | sha256sum | cut -c1-16; }
# The hash an image of this name carries: "" when absent, "real" when it is not a stand-in.
carried() {
  local found
  found=$(docker image inspect -f "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null) || return 0
  [[ -n $found && $found != "<no value>" ]] && echo "$found" || echo real
}
# The image name deploy/ uses: the FROM default of the Dockerfile, an image: of compose.yaml.
from_name() { sed -n 's/^ARG PYTHON_IMAGE=//p' "$deploy/Dockerfile" | head -n 1; }
compose_image() { grep -oE "image: *\"?[^\" ]*$1[^\" ]*" "$deploy/compose/compose.yaml" | head -n 1 | sed 's/image: *"\{0,1\}//'; }

base=local/debian:$suite
base_image() {
  local want have root
  want=$(recipe)
  have=$(carried "$base")
  if [[ $have == "$want" || $have == real ]]; then return; fi
  command -v debootstrap >/dev/null || {
    say "debootstrap is not installed (apt-get install debootstrap), or pull the images deploy/ names"
    exit 1
  }
  say "$base: debootstrap --variant=minbase $suite from $mirror"
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$root'" EXIT
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
    tail -n 20 "$cache/debootstrap.log" >&2
    exit 1
  }
  # No services start in an image build; apt's caches go.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import --change "LABEL $label=$want" --change 'CMD ["bash"]' - "$base" >/dev/null
  rm -rf "$root"
  trap - EXIT
}

# stand_in NAME DOCKERFILE [context files...]: build DOCKERFILE on the base, tagged NAME.
stand_in() {
  local name=$1 dockerfile=$2 want have context
  [[ -n $name ]] || { say "no image name found for $dockerfile"; exit 1; }
  if [[ $(carried "$name") == real ]]; then
    say "$name: a real image is there, kept"
    return
  fi
  base_image
  context=$(mktemp -d "$cache/context.XXXXXX")
  mkdir "$context/certs"
  if [[ $dockerfile == python.Dockerfile && -d $certs ]]; then
    find "$certs" -maxdepth 1 -name '*.crt' -exec cp {} "$context/certs/" \;
  fi
  local files=("$here/$dockerfile")
  mapfile -t -O 1 files < <(find "$context/certs" -type f | sort)
  want=$(recipe "${files[@]}")
  want=$(echo "$want $(carried "$base")" | sha256sum | cut -c1-16)  # rebuilt when the base is
  have=$(carried "$name")
  if [[ $have == "$want" ]]; then
    say "$name: cached"
  else
    say "$name: building from Debian's packages"
    docker build -q --network host --build-arg "BASE=$base" --label "$label=$want" \
      -f "$here/$dockerfile" -t "$name" "$context" >/dev/null
  fi
  rm -rf "$context"
}

if [[ $what == python || $what == all ]]; then
  stand_in "$(from_name)" python.Dockerfile
fi
if [[ $what == compose || $what == all ]]; then
  stand_in "$(compose_image redis)" redis.Dockerfile
  stand_in "$(compose_image alertmanager)" alertmanager.Dockerfile
  stand_in "$(compose_image prometheus)" prometheus.Dockerfile
fi
