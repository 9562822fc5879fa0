#!/bin/bash
# Builds what the libvirt e2e test boots, into OUT_DIR (default /var/tmp/litterbox-e2e):
#   base.qcow2  Debian 12 root filesystem with systemd, sshd, cloud-init and the restricted guest
#               agent (+ host kernel's modules)
#   initrd.img  a small initrd for the host kernel that only loads what /dev/vda needs
# Each is published atomically, so an interrupted build is redone next time.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/var/tmp/litterbox-e2e}
kver=$(basename "$(ls -1 /boot/vmlinuz-* | sort -V | tail -n1)" | sed 's/^vmlinuz-//')
mkdir -p "$out"
chmod 0755 "$out"
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [ ! -f "$out/initrd.img" ]; then
  cp -a /etc/initramfs-tools "$work/initramfs"
  sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' "$work/initramfs/initramfs.conf"
  printf 'virtio_pci\nvirtio_blk\next4\n' > "$work/initramfs/modules"
  mkinitramfs -d "$work/initramfs" -o "$work/initrd.img" "$kver"
  chmod 0644 "$work/initrd.img"
  mv "$work/initrd.img" "$out/initrd.img"
fi

if [ ! -f "$out/base.qcow2" ]; then
  mmdebstrap --variant=minbase \
    --include=systemd-sysv,udev,openssh-server,cloud-init,sudo,ifupdown,isc-dhcp-client,netbase,iproute2,kmod,qemu-guest-agent,util-linux-extra \
    bookworm "$work/rootfs.tar"
  mkdir "$work/root"
  tar -C "$work/root" --numeric-owner -xpf "$work/rootfs.tar"
  mkdir -p "$work/root/lib/modules"
  cp -a "/lib/modules/$kver" "$work/root/lib/modules/"
  # Only the seed can configure these guests; probing other datasources costs boot time.
  printf 'datasource_list: [NoCloud, None]\n' > "$work/root/etc/cloud/cloud.cfg.d/90-litterbox.cfg"
  # NICs by MAC, as in the reference image (issue 11): udev names the user-mode NIC (QEMU's
  # default MAC) lbnet0 and the proxy NIC lbproxy0, whatever order they enumerate in, and
  # ifupdown configures them by those names; cloud-init's fallback (DHCP on "eth0") is off.
  printf 'network: {config: disabled}\n' > "$work/root/etc/cloud/cloud.cfg.d/91-litterbox-network.cfg"
  printf '[Match]\nMACAddress=52:54:00:12:34:56\n\n[Link]\nName=lbnet0\n' \
    > "$work/root/etc/systemd/network/10-litterbox-net.link"
  printf '[Match]\nMACAddress=52:54:00:77:00:02\n\n[Link]\nName=lbproxy0\n' \
    > "$work/root/etc/systemd/network/10-litterbox-proxy.link"
  cat > "$work/root/etc/network/interfaces" <<'IFACES'
auto lo
iface lo inet loopback

allow-hotplug lbnet0
iface lbnet0 inet dhcp

allow-hotplug lbproxy0
iface lbproxy0 inet static
    address 169.254.77.2/30
    pre-up echo 1 > /proc/sys/net/ipv6/conf/lbproxy0/disable_ipv6
IFACES
  # What image conversion adds (hypervisor/image): the name in /etc/hosts and in the template
  # that manage_etc_hosts rewrites it from.
  for f in "$work/root/etc/hosts" "$work/root/etc/cloud/templates/hosts.debian.tmpl"; do
    printf '169.254.77.1 proxy.litterbox.internal\n' >> "$f"
  done
  # The guest agent restricted exactly as in the reference image (templates and clones).
  mkdir -p "$work/root/etc/qemu"
  cp "$here/../../../cloud-init/images/files/qemu-ga.conf" "$work/root/etc/qemu/qemu-ga.conf"
  # Jobs a disposable guest never needs.
  for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer \
              systemd-timesyncd.service; do
    ln -sf /dev/null "$work/root/etc/systemd/system/$unit"
  done
  truncate -s 3G "$work/base.raw"
  mkfs.ext4 -q -F -L root -d "$work/root" "$work/base.raw"
  qemu-img convert -f raw -O qcow2 "$work/base.raw" "$work/base.qcow2"
  chmod 0644 "$work/base.qcow2"
  mv "$work/base.qcow2" "$out/base.qcow2"
fi
