#!/bin/sh
# Builds the litterbox reference guest image (Debian 12 + systemd + sshd + cloud-init) as an
# OCI image layout with one gzip layer, without a container runtime.
#   build.sh <oci-layout-dir> [tag]
# Needs root, mmdebstrap, jq, gzip, sha256sum. Takes about a minute from the Debian mirror.
set -eu

out=${1:?usage: build.sh <oci-layout-dir> [tag]}
tag=${2:-12}
here=$(cd "$(dirname "$0")" && pwd)
mirror=${LITTERBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}

work=$(mktemp -d "${TMPDIR:-/tmp}/litterbox-image.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

packages=systemd-sysv,udev,openssh-server,cloud-init,sudo,systemd-resolved,cloud-guest-utils
packages=$packages,e2fsprogs,ca-certificates,iproute2,kmod,netbase
# Cloning (issue 9): the guest agent is the host-only channel that re-identifies a clone;
# guest-set-time needs /sbin/hwclock, which util-linux-extra has and the agent does not pull in.
packages=$packages,qemu-guest-agent,util-linux-extra

# Units that cost boot time under TCG and do nothing useful in a short-lived guest.
masked="apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service
e2scrub_all.timer e2scrub_all.service e2scrub_reap.service fstrim.timer fstrim.service
dpkg-db-backup.timer dpkg-db-backup.service getty@tty1.service systemd-pstore.service
systemd-networkd-wait-online.service cloud-init-hotplugd.socket"

mmdebstrap --variant=minbase --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --aptopt='Acquire::Languages "none"' \
  --customize-hook="cp '$here/files/99-litterbox.cfg' \"\$1/etc/cloud/cloud.cfg.d/99-litterbox.cfg\"" \
  --customize-hook="cp '$here/files/10-dhcp.network' \"\$1/etc/systemd/network/10-dhcp.network\"" \
  --customize-hook="cp '$here/files/05-litterbox-proxy.network' \"\$1/etc/systemd/network/05-litterbox-proxy.network\"" \
  --customize-hook="cp '$here/files/fstab' \"\$1/etc/fstab\"" \
  --customize-hook="mkdir -p \"\$1/etc/qemu\" && cp '$here/files/qemu-ga.conf' \"\$1/etc/qemu/qemu-ga.conf\"" \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd.service systemd-resolved.service' \
  --customize-hook="chroot \"\$1\" systemctl mask $(echo $masked)" \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  --customize-hook=': > "$1/etc/machine-id"; rm -f "$1/var/lib/dbus/machine-id"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*.log' \
  --customize-hook='echo litterbox > "$1/etc/hostname"' \
  bookworm "$work/rootfs.tar" "deb $mirror bookworm main" "deb $mirror bookworm-updates main"

# One layer: the root filesystem tarball. diff_id is over the uncompressed tar, the layer
# digest over the gzip stream (OCI image spec, "Layer" and "config.rootfs").
diff_id=sha256:$(sha256sum "$work/rootfs.tar" | cut -d' ' -f1)
gzip -n -1 "$work/rootfs.tar"
mkdir -p "$out/blobs/sha256"
layer_hex=$(sha256sum "$work/rootfs.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/rootfs.tar.gz")
mv "$work/rootfs.tar.gz" "$out/blobs/sha256/$layer_hex"

jq -cn --arg diff "$diff_id" '{
  architecture: "amd64", os: "linux",
  config: {Cmd: ["/sbin/init"], Labels: {"org.litterbox.image": "reference"}},
  rootfs: {type: "layers", diff_ids: [$diff]},
  history: [{created_by: "litterbox cloud-init/images/build.sh"}]
}' > "$work/config.json"
config_hex=$(sha256sum "$work/config.json" | cut -d' ' -f1)
config_size=$(stat -c %s "$work/config.json")
mv "$work/config.json" "$out/blobs/sha256/$config_hex"

jq -cn --arg c "sha256:$config_hex" --argjson cs "$config_size" \
       --arg l "sha256:$layer_hex" --argjson ls "$layer_size" '{
  schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
  config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
  layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l, size: $ls}]
}' > "$work/manifest.json"
manifest_hex=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
manifest_size=$(stat -c %s "$work/manifest.json")
mv "$work/manifest.json" "$out/blobs/sha256/$manifest_hex"

printf '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"
jq -cn --arg m "sha256:$manifest_hex" --argjson ms "$manifest_size" --arg tag "$tag" '{
  schemaVersion: 2,
  manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m,
               size: $ms, platform: {architecture: "amd64", os: "linux"},
               annotations: {"org.opencontainers.image.ref.name": $tag}}]
}' > "$out/index.json"
echo "built $out:$tag (manifest sha256:$manifest_hex, layer $layer_size bytes)"
