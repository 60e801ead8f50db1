#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# kura-test: no-asan
# kura-test: timeout=1200
# The rescue image (kura rescue build): a hybrid ISO with Debian's kernel and
# kura restores unattended, from kernel command-line keys, onto an empty disk:
#   1. under SeaBIOS, from a repository on a second virtio disk (ext4), key
#      file on that disk;
#   2. under OVMF (UEFI), from an SMB share served by a private smbd on the
#      host's loopback (the guest reaches it through qemu's user network at
#      10.0.2.2), key file on the share.
#   Each restored disk must hold exactly the bytes of the backed-up volume (a
#   different version for each source, so the right repository was used).
#   3. (KURA_TEST_RESCUE_BMR=0 skips it) the bare-metal case, four more boots: the
#    GPT test disk of tests/vm/make-test-disk.sh backed up with --disk, restored
#    by the rescue image under UEFI from a second virtio disk (kura.mode=auto
#    must pick `kura bmr`, --disk-map auto the empty disk), and the restored
#    disk must boot to exactly the original's marker; kura bmr, running under
#    UEFI there, must have registered a boot entry (efibootmgr).  Then the same
#    version from the SMB share, restored by the rescue image under BIOS, and
#    that disk must boot to the same marker too.
# Guest time measured: ~46 + ~53 + ~44 + ~21 + ~50 + ~20 s; builds and set-up ~70 s; the
# rest is waiting for other tests' guests (one at a time).
# KURA_TEST_RESCUE_INTERACTIVE=1 adds one more boot (BIOS, ~65 s) that drives
# the text menu over a serial socket: repository on the local disk, passphrase
# typed at the prompt (must not be echoed), version 1 of the list, disk map
# auto, YES.
. "$(dirname "$0")/lib.sh"
require_tool qemu-system-x86_64 grub-mkrescue xorriso mformat cpio zstd mkfs.ext4 smbd
[ -f /usr/share/ovmf/OVMF.fd ] || [ -n "${KURA_VM_OVMF:-}" ] || skip "OVMF is missing (apt-get install ovmf)"
VM=$SRCROOT/tests/vm
KURA_VM_USE_CACHED=1 KURA_VM_QUIET=1 "$VM/prepare.sh" || fail "tests/vm/prepare.sh failed"
CACHE=${KURA_VM_CACHE:-/var/cache/kura-vm}
KVER=$(cat "$CACHE/KVER")
KROOT=$CACHE/$KVER/root
[ -f "$KROOT/boot/vmlinuz-$KVER" ] && [ -d "$KROOT/lib/modules/$KVER" ] || fail "no cached Debian kernel in $KROOT"

# ---- the data: a small ext4 volume, two versions --------------------------------

truncate -s 40M "$T/src.img"
mkfs.ext4 -q -F -L rescue-src "$T/src.img" || fail "mkfs.ext4"
src=$(losetup -f --show "$T/src.img") || fail "losetup"
echo "$src" >>"$T/loops"
fs_fill ext4 "$src" 7 6
losetup -d "$src"
sha_v1=$(sha "$T/src.img")

# The repository lives on a second disk (ext4), with a key file next to it.
truncate -s 96M "$T/repodisk.img"
mkfs.ext4 -q -F -L kura-repo "$T/repodisk.img" || fail "mkfs.ext4 repodisk"
do_mount -o loop "$T/repodisk.img" "$T/rd"
mkdir -p "$T/rd/backups"
kura_init_test_repo "$T/rd/backups/srv1"
kok --repo "$T/rd/backups/srv1" backup --volume "$T/src.img"
printf '%s\n' "$KURA_PASSWORD" >"$T/rd/kura.key"
chmod 600 "$T/rd/kura.key"

# The share gets a copy of that repository plus a newer version (v2).
mkdir -p "$T/share"
cp -a "$T/rd/backups/srv1" "$T/share/srv1"
do_umount "$T/rd"
cp "$T/src.img" "$T/src2.img"
src=$(losetup -f --show "$T/src2.img") || fail "losetup"
echo "$src" >>"$T/loops"
fs_change ext4 "$src" 5 >/dev/null
losetup -d "$src"
sha_v2=$(sha "$T/src2.img")
assert_ne "$sha_v1" "$sha_v2" "the two versions"
# Same volume name in both versions: back up v2 from a file named like v1's.
mkdir -p "$T/v2" && cp "$T/src2.img" "$T/v2/src.img"
kok --repo "$T/share/srv1" backup --volume "$T/v2/src.img"
rm -f "$T/v2/src.img"
printf '%s\n' "$KURA_PASSWORD" >"$T/share/kura.key"
unset KURA_PASSWORD # the guests get it from the key files only
sha_repodisk=$(sha "$T/repodisk.img")

# ---- the images ---------------------------------------------------------------------

# Usage errors first (cheap): a passphrase key on the command line is refused.
krun rescue build "$T/x.iso" --kernel "$KROOT/boot/vmlinuz-$KVER" --modules "$KROOT/lib/modules/$KVER" \
        --append "kura.repo=/dev/vdb:/r kura.password=secret"
[ "$KRC" != 0 ] || fail "rescue build accepted kura.password= on the kernel command line"
assert_contains "$T/err" "never goes on the kernel command line"
[ ! -e "$T/x.iso" ] || fail "a refused build left $T/x.iso"
expect_fail 2 KURA-E-USAGE rescue build
expect_fail 2 KURA-E-USAGE rescue frobnicate "$T/x.iso"

t0=$SECONDS
KURA_TIMEOUT=600 kok rescue build "$T/disk.iso" --kernel "$KROOT/boot/vmlinuz-$KVER" --modules "$KROOT/lib/modules/$KVER" \
        --cache "$T/rcache" --timeout 1 \
        --append "kura.repo=/dev/vdb:/backups/srv1 kura.keyfile=/dev/vdb:/kura.key kura.version=latest kura.disk-map=auto kura.poweroff=1"
info "ISO 1 built in $((SECONDS - t0)) s: $(du -h "$T/disk.iso" | cut -f1)"
t0=$SECONDS
KURA_TIMEOUT=600 kok rescue build "$T/smb.iso" --kernel "$KROOT/boot/vmlinuz-$KVER" --modules "$KROOT/lib/modules/$KVER" \
        --cache "$T/rcache" --timeout 1 \
        --append "kura.share=smb://10.0.2.2:4445/kura kura.repo=srv1 kura.keyfile=share:/kura.key kura.poweroff=1"
info "ISO 2 built in $((SECONDS - t0)) s (initramfs from the cache)"
assert_contains "$T/err" "initramfs from the cache"

# A hybrid image: El Torito for BIOS and for UEFI, and an MBR for USB sticks.
xorriso -indev "$T/disk.iso" -report_el_torito plain >"$T/eltorito" 2>&1 || fail "xorriso cannot read the ISO"
grep -q 'El Torito boot img :   1  BIOS' "$T/eltorito" || { cat "$T/eltorito" >&2; fail "no BIOS El Torito image"; }
grep -q 'El Torito boot img :   2  UEFI' "$T/eltorito" || { cat "$T/eltorito" >&2; fail "no UEFI El Torito image"; }
assert_eq 55aa "$(xxd -p -s 510 -l 2 "$T/disk.iso")" "MBR signature of the ISO (USB boot)"
# The key file is not on the medium unless asked for, and no passphrase is in grub.cfg.
xorriso -osirrox on -indev "$T/disk.iso" -extract /boot/grub/grub.cfg "$T/grub.cfg" >/dev/null 2>&1 || fail "extract grub.cfg"
assert_contains "$T/grub.cfg" "kura.repo=/dev/vdb:/backups/srv1"
assert_not_contains "$T/grub.cfg" "itest-passphrase"
! xorriso -indev "$T/disk.iso" -find /kura -name keyfile 2>/dev/null | grep -q keyfile || fail "the ISO holds a key file"

# ---- boot 1: BIOS, repository on a local disk -------------------------------------------

truncate -s 40M "$T/target1.img"
t0=$SECONDS
"$VM/boot-disk.sh" --firmware bios --cdrom "$T/disk.iso" --disk-rw "$T/target1.img" --disk "$T/repodisk.img" \
        --mem 1024 --timeout 420 --log "$T/bios.log" \
        --marker 'KURA-RESCUE-RESULT: PASS' --fail-marker 'KURA-RESCUE-RESULT: FAIL' ||
        { grep -a 'kura-rescue' "$T/bios.log" | tail -20 >&2; fail "BIOS rescue boot did not restore"; }
info "BIOS boot + restore from the local disk: $((SECONDS - t0)) s"
grep -aq 'KURA-RESCUE-READY bios' "$T/bios.log" || fail "the guest did not boot under BIOS"
grep -aq "KURA-RESCUE-RUN: kura restore .*--volume-to /dev/vda" "$T/bios.log" || fail "the restore did not target /dev/vda"
assert_eq "$sha_v1" "$(sha "$T/target1.img")" "target disk 1 after the BIOS rescue (version 1)"
assert_eq "$sha_repodisk" "$(sha "$T/repodisk.img")" "repository disk unchanged (snapshot)"

# ---- boot 2: UEFI, repository on an SMB share -----------------------------------------

mkdir -p "$T/smb"/{lock,state,cache,private,run,ncalrpc}
cat >"$T/smb.conf" <<EOF
[global]
        server role = standalone server
        smb ports = 4445
        interfaces = 127.0.0.1
        bind interfaces only = yes
        lock directory = $T/smb/lock
        state directory = $T/smb/state
        cache directory = $T/smb/cache
        private dir = $T/smb/private
        pid directory = $T/smb/run
        ncalrpc dir = $T/smb/ncalrpc
        log file = $T/smb/log.smbd
        map to guest = Bad User
        load printers = no
        printing = bsd
        printcap name = /dev/null
        disable spoolss = yes
        server min protocol = SMB2
[kura]
        path = $T/share
        guest ok = yes
        guest only = yes
        read only = no
        force user = root
EOF
# Its own session: smbd signals its whole process group when it stops.
setsid smbd --foreground --no-process-group --configfile="$T/smb.conf" --debug-stdout -d 1 >"$T/smb/smbd.out" 2>&1 &
smbpid=$!
trap 'rc=$?; kill $smbpid 2>/dev/null; wait $smbpid 2>/dev/null; (exit $rc); _cleanup' EXIT
for _ in $(seq 50); do
        (exec 3<>/dev/tcp/127.0.0.1/4445) 2>/dev/null && break
        kill -0 "$smbpid" 2>/dev/null || { cat "$T/smb/smbd.out" >&2; fail "smbd did not start"; }
        sleep 0.2
done
(exec 3<>/dev/tcp/127.0.0.1/4445) 2>/dev/null || { cat "$T/smb/smbd.out" >&2; fail "smbd does not listen on 4445"; }

truncate -s 40M "$T/target2.img"
t0=$SECONDS
"$VM/boot-disk.sh" --firmware uefi --cdrom "$T/smb.iso" --disk-rw "$T/target2.img" \
        --nic user,model=virtio-net-pci --mem 1024 --timeout 420 --log "$T/uefi.log" \
        --marker 'KURA-RESCUE-RESULT: PASS' --fail-marker 'KURA-RESCUE-RESULT: FAIL' ||
        { grep -a 'kura-rescue' "$T/uefi.log" | tail -20 >&2; tail -20 "$T/smb/smbd.out" >&2; fail "UEFI rescue boot did not restore from the share"; }
info "UEFI boot + restore from the SMB share: $((SECONDS - t0)) s"
grep -aq 'KURA-RESCUE-READY uefi' "$T/uefi.log" || fail "the guest did not boot under UEFI"
grep -aq 'mounting //10.0.2.2/kura (cifs' "$T/uefi.log" || fail "the share was not mounted"
assert_eq "$sha_v2" "$(sha "$T/target2.img")" "target disk 2 after the UEFI rescue from the share (version 2)"
info "both rescue boots restored the right bytes"

# ---- boot 3 (optional): the text menu, driven over the serial port -------------------------

if [ "${KURA_TEST_RESCUE_INTERACTIVE:-0}" = 1 ]; then
        require_tool python3
        KURA_TIMEOUT=600 kok rescue build "$T/menu.iso" --kernel "$KROOT/boot/vmlinuz-$KVER" \
                --modules "$KROOT/lib/modules/$KVER" --cache "$T/rcache" --timeout 1
        truncate -s 40M "$T/target3.img"
        cat >"$T/drive.py" <<'PYEOF'
import re, socket, sys, time
sock_path, log_path, password = sys.argv[1], sys.argv[2], sys.argv[3]
script = [
    (r"Choice \[1\]: ", "1"),
    (r"Repository \(DEV:/PATH\) \[[^\]]*\]: ", "/dev/vdb:/backups/srv1"),
    (r"empty: type the passphrase\) \[\]: ", ""),
    (r"Passphrase of the repository [^:]*: ", password),
    (r"Version number \[1\]: ", "1"),
    (r"Disk map \(auto, or SRC=/dev/X,...\) \[auto\]: ", ""),
    (r"Type YES to go on \[no\]: ", "YES"),
    (r"\[r\]eboot, \[p\]ower off, or \[s\]hell\? ", "p"),
]
for _ in range(150):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock_path)
        break
    except OSError:
        time.sleep(0.2)
s.settimeout(1.0)
buf, step, t0 = "", 0, time.time()
with open(log_path, "w") as log:
    while time.time() - t0 < 400:
        try:
            d = s.recv(4096)
            if not d:
                break
            t = d.decode("utf-8", "replace")
            buf += t
            log.write(t)
            log.flush()
        except socket.timeout:
            pass
        if step < len(script) and re.search(script[step][0], buf):
            time.sleep(0.3)
            s.sendall((script[step][1] + "\r").encode())
            buf, step = "", step + 1
sys.exit(0 if step == len(script) else 1)
PYEOF
        exec 7>"$CACHE/.boot.lock" # one guest at a time (tests/vm/README.md)
        flock -w 900 7 || fail "another guest held $CACHE/.boot.lock for 15 min"
        t0=$SECONDS
        timeout -k 5 450 qemu-system-x86_64 -nodefaults -display none -vga none -nic none -no-reboot -m 1024 -smp 1 \
                -accel tcg -chardev "socket,id=s0,path=$T/serial.sock,server=on,wait=on" -serial chardev:s0 \
                -drive "file=$T/menu.iso,format=raw,media=cdrom,readonly=on,if=none,id=cd0" \
                -device ide-cd,drive=cd0,bus=ide.1,bootindex=0 \
                -drive "file=$T/target3.img,format=raw,if=virtio" \
                -drive "file=$T/repodisk.img,format=raw,snapshot=on,if=virtio" >"$T/qemu3.out" 2>&1 &
        qpid=$!
        python3 "$T/drive.py" "$T/serial.sock" "$T/menu.log" itest-passphrase-1
        drc=$?
        wait "$qpid"
        exec 7>&-
        [ "$drc" = 0 ] || { tail -30 "$T/menu.log" >&2; fail "the text menu did not go through"; }
        grep -aq 'KURA-RESCUE-RESULT: PASS' "$T/menu.log" || { tail -30 "$T/menu.log" >&2; fail "no PASS from the menu"; }
        assert_not_contains "$T/menu.log" "itest-passphrase-1" "the typed passphrase must not be echoed"
        assert_eq "$sha_v1" "$(sha "$T/target3.img")" "target disk 3 after the menu-driven restore"
        info "text menu (BIOS): $((SECONDS - t0)) s"
fi

# ---- boot 4+5: a bare-metal version through `kura bmr`, then boot it ---------

if [ "${KURA_TEST_RESCUE_BMR:-1}" = 1 ]; then
        . "$TESTDIR/bmr-lib.sh"
        require_tool sfdisk mkfs.vfat mcopy mkswap mkfs.xfs mkfs.btrfs grub-mkimage
        bmr_make_disk gpt "$T/gpt.img"
        bmr_marker_expected gpt >"$T/gpt.expected"
        truncate -s 256M "$T/repodisk2.img"
        mkfs.ext4 -q -F -L kura-repo2 "$T/repodisk2.img" || fail "mkfs.ext4 repodisk2"
        do_mount -o loop "$T/repodisk2.img" "$T/rd2"
        export KURA_PASSWORD=itest-passphrase-1
        kura_init_test_repo "$T/rd2/bmr"
        KURA_TIMEOUT=600 kok --repo "$T/rd2/bmr" backup --disk "$T/gpt.img" --snapshot none
        printf '%s\n' "$KURA_PASSWORD" >"$T/rd2/kura.key"
        unset KURA_PASSWORD
        cp -a "$T/rd2/bmr" "$T/share/bmr" # boot 6 restores it from the SMB share
        do_umount "$T/rd2"
        truncate -s "$(stat -c %s "$T/gpt.img")" "$T/target4.img"
        rm -f "$T/gpt.img"
        KURA_TIMEOUT=600 kok rescue build "$T/bmr.iso" --kernel "$KROOT/boot/vmlinuz-$KVER" \
                --modules "$KROOT/lib/modules/$KVER" --cache "$T/rcache" --timeout 1 \
                --append "kura.repo=/dev/vdb:/bmr kura.keyfile=/dev/vdb:/kura.key kura.poweroff=1"
        t0=$SECONDS
        "$VM/boot-disk.sh" --firmware uefi --cdrom "$T/bmr.iso" --disk-rw "$T/target4.img" --disk "$T/repodisk2.img" \
                --mem 1024 --timeout 600 --log "$T/bmr.log" \
                --marker 'KURA-RESCUE-RESULT: PASS' --fail-marker 'KURA-RESCUE-RESULT: FAIL' ||
                { grep -a 'kura\|KURA' "$T/bmr.log" | tail -30 >&2; fail "the rescue image's bmr did not restore"; }
        grep -aq 'KURA-RESCUE-RUN: kura bmr --version' "$T/bmr.log" || fail "kura.mode=auto did not run kura bmr"
        # No kura.disk-map: --disk-map auto must pick the one empty disk (/dev/vda;
        # /dev/vdb holds the repository, the CD-ROM is not a disk).
        grep -aqE 'KURA-RESCUE-RUN: kura bmr --version [0-9a-f]+ --disk-map auto --yes' "$T/bmr.log" ||
                fail "the rescue image did not default to --disk-map auto"
        # Under UEFI kura bmr registers the restored system with the firmware
        # (OVMF keeps its variables in RAM for this boot).
        grep -aq 'UEFI: boot entry "kura restored system" registered for /dev/vda partition 2' "$T/bmr.log" ||
                { grep -a 'UEFI' "$T/bmr.log" >&2; fail "kura bmr under UEFI did not register a boot entry (efibootmgr)"; }
        info "UEFI rescue with kura bmr: $((SECONDS - t0)) s"
        t0=$SECONDS
        bmr_boot uefi "$T/target4.img" "$T/marker" --timeout 300 ||
                { tail -30 "$T/marker.console" | tr -d '\r' >&2; fail "the disk restored by the rescue image does not boot"; }
        bmr_assert_marker "$T/gpt.expected" "$T/marker" "disk restored by the rescue image"
        info "the disk restored by the rescue image boots to the original's marker under UEFI ($((SECONDS - t0)) s)"

        # ---- boot 6+7: the same bare-metal version from the SMB share, under BIOS -----------
        KURA_TIMEOUT=600 kok rescue build "$T/bmr-smb.iso" --kernel "$KROOT/boot/vmlinuz-$KVER" \
                --modules "$KROOT/lib/modules/$KVER" --cache "$T/rcache" --timeout 1 \
                --append "kura.share=smb://10.0.2.2:4445/kura kura.repo=bmr kura.keyfile=share:/kura.key kura.poweroff=1"
        truncate -s "$(stat -c %s "$T/target4.img")" "$T/target6.img"
        t0=$SECONDS
        "$VM/boot-disk.sh" --firmware bios --cdrom "$T/bmr-smb.iso" --disk-rw "$T/target6.img" \
                --nic user,model=virtio-net-pci --mem 1024 --timeout 600 --log "$T/bmr-smb.log" \
                --marker 'KURA-RESCUE-RESULT: PASS' --fail-marker 'KURA-RESCUE-RESULT: FAIL' ||
                { grep -a 'kura\|KURA' "$T/bmr-smb.log" | tail -30 >&2; tail -20 "$T/smb/smbd.out" >&2
                  fail "the rescue image's bmr from the SMB share did not restore"; }
        grep -aq 'mounting //10.0.2.2/kura (cifs' "$T/bmr-smb.log" || fail "the share was not mounted (bmr)"
        grep -aqE 'KURA-RESCUE-RUN: kura bmr --version [0-9a-f]+ --disk-map auto --yes' "$T/bmr-smb.log" ||
                fail "the rescue image did not run kura bmr from the share"
        info "BIOS rescue with kura bmr from the SMB share: $((SECONDS - t0)) s"
        t0=$SECONDS
        bmr_boot bios "$T/target6.img" "$T/marker6" --timeout 300 ||
                { tail -30 "$T/marker6.console" | tr -d '\r' >&2; fail "the disk restored from the share does not boot"; }
        bmr_assert_marker "$T/gpt.expected" "$T/marker6" "disk restored by the rescue image from the SMB share"
        info "the disk restored from the SMB share boots to the original's marker under BIOS ($((SECONDS - t0)) s)"
fi
