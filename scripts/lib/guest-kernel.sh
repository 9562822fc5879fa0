# The guest kernel and a small initrd for it. Sourced after common.sh.
#
# Guests boot the hypervisor host's Debian kernel directly. Its stock initrd (~30 MB) probes
# for everything; under TCG that costs tens of seconds per boot. This builds, once per kernel
# version, an initrd that only loads what a root filesystem on virtio-blk needs.
#
# guest_kernel_ensure: builds when missing under "$LITTERBOX_STATE_DIR/guest-kernel/<version>"
# and exports LITTERBOX_KERNEL and LITTERBOX_INITRD (unless they are already set).

guest_kernel_ensure() {
  if [[ -n "${LITTERBOX_KERNEL:-}" && -n "${LITTERBOX_INITRD:-}" ]]; then
    return 0
  fi
  local kernel version dir
  kernel="$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)"
  [[ -n "$kernel" ]] || lb_die "no guest kernel in /boot: apt-get install linux-image-amd64"
  version="${kernel#/boot/vmlinuz-}"
  [[ -d "/lib/modules/$version" ]] || lb_die "no /lib/modules/$version for the guest kernel"
  dir="$LITTERBOX_STATE_DIR/guest-kernel/$version"
  if [[ ! -s "$dir/initrd.img" ]]; then
    command -v mkinitramfs >/dev/null || lb_die "mkinitramfs missing: run scripts/install-deps"
    lb_log "building a small guest initrd for $version"
    mkdir -p "$dir"
    chmod 0755 "$LITTERBOX_STATE_DIR/guest-kernel" "$dir"
    local work
    work="$(mktemp -d "$dir/.build.XXXXXX")"
    cp -a /etc/initramfs-tools "$work/conf"
    sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' "$work/conf/initramfs.conf"
    printf 'virtio_pci\nvirtio_blk\next4\n' >"$work/conf/modules"
    if ! mkinitramfs -d "$work/conf" -o "$work/initrd.img" "$version" >"$work/log" 2>&1; then
      cat "$work/log" >&2
      rm -rf "$work"
      lb_die "mkinitramfs failed"
    fi
    chmod 0644 "$work/initrd.img"
    mv "$work/initrd.img" "$dir/initrd.img"  # published whole or not at all
    rm -rf "$work"
  fi
  export LITTERBOX_KERNEL="$kernel" LITTERBOX_INITRD="$dir/initrd.img"
}
