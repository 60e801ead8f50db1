#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# /sbin/kura-job of kura's bootable test disks: init (disk-init.sh) runs it
# after loading its modules and before the marker.  Without a disk labelled
# KURA-JOB it returns at once.  With one (tests/vm/make-job-disk.sh): mounts
# it read-write at /tmp/kura-job, loads the kernel modules it carries
# (modules/order), runs its run.sh with sh in that directory, its output on
# the console between the lines
#
#   KURA-JOB-BEGIN
#   KURA-JOB-END rc=N
#
# then syncs and unmounts it, leaving the system as it found it (the marker
# that follows must not see the job).  run.sh gets KURA_JOB (the mount
# point), PATH with $KURA_JOB/bin first (the job's programs: wrappers that
# run the bundled loader on the bundled libraries, the root being busybox
# only) and LD_LIBRARY_PATH=$KURA_JOB/lib.  busybox only.
dev=$(findfs LABEL=KURA-JOB 2>/dev/null) || exit 0
[ -b "$dev" ] || exit 0
J=/tmp/kura-job
con=/dev/console
[ -c "$con" ] || con=/dev/null
mkdir -p "$J"
if ! mount -t ext4 -o rw "$dev" "$J" 2>/tmp/kura-job.err; then
        {
                echo "KURA-JOB-BEGIN"
                echo "kura-job: cannot mount $dev (LABEL=KURA-JOB) at $J: $(cat /tmp/kura-job.err)"
                echo "KURA-JOB-END rc=125"
        } >"$con"
        rm -f /tmp/kura-job.err
        rmdir "$J" 2>/dev/null
        exit 0
fi
rm -f /tmp/kura-job.err
if [ -f "$J/modules/order" ]; then
        while read -r m; do
                # already loaded (built in, or by init) is fine
                [ -n "$m" ] && insmod "$J/modules/$m" 2>/dev/null
        done <"$J/modules/order"
fi
echo "KURA-JOB-BEGIN" >"$con"
if [ -f "$J/run.sh" ]; then
        (
                cd "$J" || exit 126
                KURA_JOB=$J LD_LIBRARY_PATH=$J/lib PATH=$J/bin:/bin:/sbin:/usr/bin:/usr/sbin HOME=/tmp \
                        exec sh "$J/run.sh"
        ) </dev/null >"$con" 2>&1
        rc=$?
else
        echo "kura-job: $dev has no run.sh" >"$con"
        rc=127
fi
sync
echo "KURA-JOB-END rc=$rc" >"$con"
cd /
# The job's programs may still hold it for a moment (a killed child).
i=0
while ! umount "$J" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -ge 10 ]; then
                echo "kura-job: cannot unmount $J; detaching it lazily" >"$con"
                umount -l "$J" 2>/dev/null
                break
        fi
        sleep 1
done
rmdir "$J" 2>/dev/null
exit 0
