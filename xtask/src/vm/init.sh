#!/bin/sh
# PID 1 of a `cargo xtask vm-test` guest (busybox sh). Prepares what Docker and a distribution
# would (mounts, modules, a docker0 bridge), runs each line of /vmtest/plan and powers off.
# Results go to the serial console between VMTEST-BEGIN and VMTEST-END lines; the host parses
# them (xtask/src/vm/results.rs).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
echo "VMTEST-KERNEL $(uname -r)"
while read -r module; do
    insmod "/vmtest/modules/$module" || echo "VMTEST-WARN insmod $module failed"
done < /vmtest/modules.order
ip link set lo up
ip link add docker0 type bridge
ip addr add 172.17.0.1/16 dev docker0
ip link set docker0 up

export SENSOR_BIN=/vmtest/bin/sensor
export SENSOR_TEST_IMAGE=sensor-test/busybox:latest
export SENSOR_TEST_RUNTIME=runc
export SENSOR_TEST_ROOTFS=/vmtest/image
export SENSOR_TEST_ARTIFACTS=/tmp/artifacts
export RUST_BACKTRACE=0

# Each plan line: RUN-ID COLUMN HOOKS SHAPE BINARY [TEST-NAME-FILTER...]
while read -r id column hooks shape binary filters; do
    echo "VMTEST-BEGIN $id $column $binary"
    rm -rf /tmp/artifacts
    mkdir -p /tmp/artifacts
    SENSOR_TEST_HOOKS="$hooks" SENSOR_TEST_CGROUP_SHAPE="$shape" \
        timeout 1500 "/vmtest/bin/$binary" --test-threads=1 $filters 2>&1
    rc=$?
    if [ "$rc" != 0 ]; then
        for f in /tmp/artifacts/*.stderr; do
            [ -s "$f" ] || continue
            echo "VMTEST-ARTIFACT $f (last 15 lines)"
            tail -n 15 "$f"
        done
    fi
    echo "VMTEST-END $id $column $binary rc=$rc"
done < /vmtest/plan
echo "VMTEST-DONE"
sync
poweroff -f
