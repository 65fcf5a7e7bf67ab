#!/usr/bin/env bash
# A small cluster on this one machine, for rehearsing multi-node runs: a head node and N
# compute nodes, each a Linux network namespace (its own address on a private bridge, no
# route off the box) entered with its own UTS (hostname) and mount namespace (the cluster's
# /etc/hosts, its own boot_id), plus a real Slurm (Debian's slurm-wlm and munge): munged and
# slurmctld on head, one slurmd per node, two fake GPUs per node as gres. Files, /tmp, PIDs
# and CPUs stay shared, like a cluster on a shared file system. The tests start and stop it
# (tests/test_cluster.py); run/install.sh installs its tools when LTH_CLUSTER is set.
#
#   bash run/cluster.sh check          can it run here? (exit 1 and one line saying why not)
#   bash run/cluster.sh up [N]         head + node1..nodeN (default 2), Slurm idle on them
#   bash run/cluster.sh exec NODE CMD  run CMD on NODE (srun, sbatch, mpiexec from head)
#   bash run/cluster.sh kill NODE      kill every process on NODE: the node is lost
#   bash run/cluster.sh down           stop everything, remove the namespaces
#
# Launchers that start ranks over ssh use the shim $LTH_CLUSTER_DIR/ssh, which enters the
# node instead (Hydra: HYDRA_LAUNCHER=ssh HYDRA_LAUNCHER_EXEC=...; Open MPI:
# OMPI_MCA_plm_rsh_agent=...). Knobs, to run two clusters side by side: LTH_CLUSTER_DIR
# (state, config, logs; default /tmp/lth-cluster), LTH_CLUSTER_SUBNET (first three octets;
# default 10.234.0), LTH_CLUSTER_NS (the namespaces' prefix; default lthc).
set -euo pipefail
DIR=${LTH_CLUSTER_DIR:-/tmp/lth-cluster}
SUBNET=${LTH_CLUSTER_SUBNET:-10.234.0}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
NS=${LTH_CLUSTER_NS:-lthc}   # namespaces $NS-br, $NS-head, $NS-node1 ...
BRIDGE=$NS-br
export SLURM_CONF=$DIR/etc/slurm.conf
die() { echo "cluster: error: $*" >&2; exit 1; }
nodes() { cat "$DIR/nodes" 2>/dev/null || true; }
computes() { nodes | grep -v '^head$' || true; }
address() { awk -v n="$1" '$2 == n {print $1}' "$DIR/hosts"; }

cmd_check() {   # one line saying why the cluster cannot run here, or nothing
    local t
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces and Slurm's daemons)"
    for t in ip unshare nsenter munged slurmctld slurmd srun sbatch scontrol; do
        command -v "$t" >/dev/null || die "$t is missing (bash run/install.sh with LTH_CLUSTER=1 installs it)"
    done
    ip netns add $NS-probe 2>/dev/null || die "cannot create a network namespace here (a container without CAP_SYS_ADMIN?)"
    ip netns del $NS-probe
    unshare --uts --mount true 2>/dev/null || die "cannot create UTS and mount namespaces here"
}

cmd_up() {
    local n=${1:-2} i name
    cmd_check
    [ ! -f "$DIR/nodes" ] || die "already up (bash run/cluster.sh down first)"
    mkdir -p "$DIR"/{etc,munge,log,run,dev,state/ctld}
    ln -sf "$SELF" "$DIR/ssh"
    findmnt -rn /run/netns >/dev/null 2>&1 && touch "$DIR/run/netns-was-mounted"
    # the host keeps its default route: make the fake subnet unreachable there, so nothing
    # run outside the nodes sends a packet for it off the machine
    ip route add unreachable "$SUBNET.0/24" 2>/dev/null && touch "$DIR/run/route"
    ip netns add $BRIDGE
    ip -n $BRIDGE link set lo up
    ip -n $BRIDGE link add br0 type bridge
    ip -n $BRIDGE link set br0 up
    printf '127.0.0.1 localhost\n::1 localhost\n' > "$DIR/hosts"
    : > "$DIR/nodes"
    for ((i = 0; i <= n; i++)); do
        name=node$i; [ "$i" = 0 ] && name=head
        ip netns add "$NS-$name"
        echo "$name" >> "$DIR/nodes"
        ip link add "v-$name" netns $BRIDGE type veth peer name eth0 netns "$NS-$name"
        ip -n $BRIDGE link set "v-$name" master br0 up
        ip -n "$NS-$name" link set lo up
        ip -n "$NS-$name" addr add "$SUBNET.$((10 + i))/24" dev eth0
        ip -n "$NS-$name" link set eth0 up
        echo "$SUBNET.$((10 + i)) $name" >> "$DIR/hosts"
        cat /proc/sys/kernel/random/uuid > "$DIR/run/$name.boot_id"   # UCX: one boot_id = one host
        mkdir -p "$DIR/state/slurmd-$name" "$DIR/state/tmp-$name"
    done
    slurm_config
    [ -f "$DIR/munge/munge.key" ] || { head -c 1024 /dev/urandom > "$DIR/munge/munge.key"; chmod 400 "$DIR/munge/munge.key"; }
    chmod 711 "$DIR/munge"
    # one munged serves every node: a unix socket on the shared file system is reachable from all
    cmd_exec head munged --force --socket="$DIR/munge/socket" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/seed"
    cmd_exec head slurmctld -i
    for name in $(computes); do cmd_exec "$name" slurmd -N "$name"; done
    for ((i = 0; i < 120; i++)); do
        [ "$(cmd_exec head sinfo -h -N -o %t 2>/dev/null | grep -c '^idle')" = "$n" ] && {
            echo "cluster: up: head $(computes | paste -sd' ') (Slurm idle; logs in $DIR/log)"; return 0; }
        sleep 0.5
    done
    cmd_exec head sinfo -N -l >&2 || true
    die "Slurm's nodes are not idle after 60 s; see $DIR/log/"
}

slurm_config() {   # proctrack by parent PID, no cgroups or binding: the nodes share one kernel
    local list
    list=$(computes | paste -sd, -)
    cat > "$DIR/etc/slurm.conf" <<EOF
# written by run/cluster.sh
ClusterName=lthc
SlurmctldHost=head($(address head))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$DIR/munge/socket,cred_expire=10
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/slurmd-%n
TmpFS=$DIR/state/tmp-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=pmi2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
GresTypes=gpu
NodeName=DEFAULT CPUs=$(nproc) RealMemory=2000 Gres=gpu:fake:2 State=UNKNOWN
EOF
    for name in $(computes); do echo "NodeName=$name NodeAddr=$(address "$name")"; done >> "$DIR/etc/slurm.conf"
    echo "PartitionName=debug Nodes=$list Default=YES MaxTime=INFINITE State=UP" >> "$DIR/etc/slurm.conf"
    # the fake nodes' /sys/fs/cgroup is an empty tmpfs, where "autodetect" fails; unused anyway
    printf 'CgroupPlugin=cgroup/v1\nCgroupAutomount=no\n' > "$DIR/etc/cgroup.conf"
    # fake GPUs: copies of /dev/null, enough for Slurm to count them and set CUDA_VISIBLE_DEVICES
    for g in 0 1; do [ -e "$DIR/dev/gpu$g" ] || mknod -m 666 "$DIR/dev/gpu$g" c 1 3; done
    printf 'AutoDetect=off\nNodeName=%s Name=gpu Type=fake File=%s/dev/gpu[0-1]\n' "$list" "$DIR" > "$DIR/etc/gres.conf"
}

cmd_exec() {   # NODE CMD...: CMD in NODE's network namespace, with its hostname, hosts, boot_id
    local name=${1:?exec: which node?}; shift
    [ $# -gt 0 ] || die "exec: no command"
    grep -qx -- "$name" "$DIR/nodes" 2>/dev/null || die "no node $name (is the cluster up?)"
    ip netns exec "$NS-$name" unshare --uts --mount --propagation private -- /bin/sh -c '
        hostname "$1" && mount --bind "$2/hosts" /etc/hosts &&
        mount --bind "$2/run/$1.boot_id" /proc/sys/kernel/random/boot_id &&
        mount -t tmpfs -o size=1m lthc-cgroup /sys/fs/cgroup && shift 2 && exec "$@"' \
        lthc "$name" "$DIR" "$@"
}

cmd_ssh() {   # what ssh would do: skip its options, run the remote command with sh on the node
    while [ $# -gt 0 ]; do
        case $1 in
            -[BbcDEeFIiJLlmOopQRSWw]) shift 2 ;;
            --) shift; break ;;
            -*) shift ;;
            *) break ;;
        esac
    done
    local host=${1:?ssh: no host}; shift
    [ $# -gt 0 ] || die "ssh: no remote command (no interactive logins)"
    cmd_exec "${host#*@}" env -i HOME="${HOME:-/root}" USER=root LOGNAME=root SHELL=/bin/sh LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c "$*"
}

kill_in() {   # NAMESPACE SIGNAL: signal every process in it, until none is left (bounded)
    local ns=$1 sig=$2 pids i
    for ((i = 0; i < 20; i++)); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        [ -n "$pids" ] || return 0
        kill "-$sig" $pids 2>/dev/null || true
        sleep 0.5
        [ "$i" = 6 ] && sig=KILL
    done
}

cmd_kill() {   # NODE: every process on it killed at once, as when a node dies
    local name=${1:?kill: which node?}
    grep -qx -- "$name" "$DIR/nodes" 2>/dev/null || die "no node $name"
    kill_in "$NS-$name" KILL
    echo "cluster: $name lost"
}

cmd_down() {
    local name
    for name in $(computes) head; do kill_in "$NS-$name" TERM; ip netns del "$NS-$name" 2>/dev/null || true; done
    ip netns del $BRIDGE 2>/dev/null || true
    [ ! -f "$DIR/run/route" ] || ip route del unreachable "$SUBNET.0/24" 2>/dev/null || true
    if [ ! -f "$DIR/run/netns-was-mounted" ] && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
        umount /run/netns 2>/dev/null || true
    fi
    rm -rf "$DIR/nodes" "$DIR/run" "$DIR/state"
    echo "cluster: down"
}

[ "$(basename "$0")" = ssh ] && { cmd_ssh "$@"; exit; }
case ${1:-} in
    check) cmd_check ;;
    up) shift; cmd_up "$@" ;;
    exec) shift; cmd_exec "$@" ;;
    ssh) shift; cmd_ssh "$@" ;;
    kill) shift; cmd_kill "$@" ;;
    down) cmd_down ;;
    *) sed -n '2,20p' "$SELF"; exit 2 ;;
esac
