"""The search on a two-node cluster made on this machine (run/cluster.sh: nodes as network and
UTS namespaces, a real Slurm with two fake GPUs per node): srun, sbatch and hostfile mpiexec
across nodes give the one-node results bit for bit, ranks count their node-local peers (threads,
GPUs) per node, a lost node and a requeue end as a batch system needs them to.

Skipped, with the reason in one line (and in the suite's header), where the cluster cannot run:
not root, no namespaces, Slurm's tools not installed (run/test.sh installs them as root).
The lost node is the module's last test: its node stays down until the cluster is taken down."""
import json
import os
import subprocess
import sys
import time

import h5py
import pytest

from mpi_helpers import ENV, ROOT, TINY, assert_same_cells, cluster_reason, lth, quiet

CLUSTER = ["bash", os.path.join(ROOT, "run", "cluster.sh")]
DIR = "/tmp/lth-cluster-tests"             # its own state: never a user's running cluster
ENV_C = dict(ENV, LTH_CLUSTER_DIR=DIR, LTH_CLUSTER_SUBNET="10.235.0", LTH_CLUSTER_NS="lthct",
             LTH_HEARTBEAT="0.5")
RUN = [sys.executable, "-m", "mpi4py", "-m", "lth_mpi", "run", TINY]
OPENMPI_VENV = os.path.join(ROOT, ".venv-openmpi")


def on(node: str, *command: str, timeout: float = 300, env=None, **kw):
    """COMMAND run on NODE of the cluster; the CompletedProcess, its chatter filtered."""
    proc = subprocess.run([*CLUSTER, "exec", node, *command], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=dict(ENV_C, **(env or {})), **kw)
    proc.stderr = quiet(proc.stderr)
    return proc


def cells_done(path: str) -> int:
    proc = subprocess.run([sys.executable, "-m", "lth_mpi", "status", path], capture_output=True,
                          text=True, env=ENV_C)
    line = next((l for l in proc.stdout.splitlines() if l.startswith("cells done:")), "")
    return int(line.split()[2]) if line else 0


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5):
    end = time.monotonic() + timeout
    while not (got := predicate()):
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(poll)
    return got


def ranks_of(path: str) -> list[tuple]:
    with h5py.File(path, "r") as f:
        return [(r["host"], r["group"], r["local_rank"], r["threads"], r["gpu"])
                for r in json.loads(f.attrs["ranks"])]


def cells_of(path: str) -> dict:
    from lth_mpi import results
    return {c["name"]: c for c in results.read_cells(path)}


@pytest.fixture(scope="module")
def cluster():
    reason = cluster_reason()
    if reason:
        pytest.skip(reason)
    subprocess.run([*CLUSTER, "down"], env=ENV_C, capture_output=True, timeout=120)
    up = subprocess.run([*CLUSTER, "up", "2"], env=ENV_C, capture_output=True, text=True,
                        timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    yield
    subprocess.run([*CLUSTER, "down"], env=ENV_C, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def one_node(tmp_path_factory):
    """ref(*options) -> cells: the tiny search on 4 ranks of this one machine, once per options."""
    cache = {}

    def ref(*options: str, n: int = 4):
        if (n, options) not in cache:
            out = str(tmp_path_factory.mktemp("one-node") / "r.h5")
            proc = lth(n, TINY, "--output", out, *options)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            cache[n, options] = cells_of(out)
        return cache[n, options]
    return ref


def test_srun_on_two_nodes_gives_the_one_node_results(cluster, one_node, tmp_path):
    """Two groups of 2, one per node: the same cells bit for bit as on one node (same groups,
    same threads); each rank counts its node's peers (local rank 0, 1 on each host, the node's
    2 cores shared: 1 thread each) and claims its own GPU of the node's two."""
    out = str(tmp_path / "r.h5")
    proc = on("head", "srun", "-N2", "-n4", "--gres=gpu:2", *RUN, "--output", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_cells(out, one_node())
    assert ranks_of(out) == [("node1", 0, 0, 1, "0"), ("node1", 0, 1, 1, "1"),
                             ("node2", 1, 0, 1, "0"), ("node2", 1, 1, 1, "1")]


def test_two_groups_on_a_node_never_claim_the_same_gpu(cluster, tmp_path):
    """Groups of one, two per node: GPUs are counted per node over all groups, so the two
    groups of node1 take its devices 0 and 1 (a group-local count would give both 0)."""
    out = str(tmp_path / "r.h5")
    proc = on("head", "srun", "-N2", "-n4", "--gres=gpu:2", *RUN, "--output", out,
              "--set", "parallel.group_size=1", "--set", "train.epochs=1",
              "--set", "rewind.points=[0]", "--set", "controls=[]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ranks_of(out) == [("node1", 0, 0, 1, "0"), ("node1", 1, 1, 1, "1"),
                             ("node2", 2, 0, 1, "0"), ("node2", 3, 1, 1, "1")]


def hostfile_run(tmp_path, hosts: str, env: dict):
    """The tiny search on 2 ranks, one per node, started from head by mpiexec over ssh (the
    cluster's shim); its path and the CompletedProcess."""
    with open(tmp_path / "hosts", "w") as f:
        f.write(hosts)
    out = str(tmp_path / "r.h5")
    proc = on("head", "env", f"HOSTFILE={tmp_path / 'hosts'}", *[f"{k}={v}" for k, v in env.items()],
              "bash", "run/mpiexec.sh", "-n", "2", "python3", *RUN[1:], "--output", out,
              timeout=240)
    return out, proc


def test_hostfile_mpiexec_across_nodes_with_mpich(cluster, one_node, tmp_path):
    """Hydra over ssh, one rank per node: each is its node's only rank and takes both of its
    cores (2 threads); the cells equal the same group on one node with 2 threads per rank."""
    out, proc = hostfile_run(tmp_path, "node1:1\nnode2:1\n",
                             {"HYDRA_LAUNCHER": "ssh", "HYDRA_LAUNCHER_EXEC": f"{DIR}/ssh"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ranks_of(out) == [("node1", 0, 0, 2, ""), ("node2", 0, 0, 2, "")]
    assert_same_cells(out, one_node("--set", "parallel.threads=2", n=2))


def test_hostfile_mpiexec_across_nodes_with_open_mpi(cluster, one_node, tmp_path):
    """The same with Open MPI (its environment from run/check-openmpi.sh): its own host-file
    syntax, its ssh agent pointed at the shim. Open MPI binds each rank to a core, and the
    thread budget follows the binding (1 thread); a sum of two is exact in any MPI, so the
    cells equal MPICH's on one node at 1 thread per rank."""
    if not os.path.exists(os.path.join(OPENMPI_VENV, "bin", "python")):
        pytest.skip("no Open MPI environment (.venv-openmpi): bash run/check-openmpi.sh makes it")
    out, proc = hostfile_run(tmp_path, "node1 slots=1\nnode2 slots=1\n",
                             {"LTH_VENV": OPENMPI_VENV, "OMPI_MCA_plm_rsh_agent": f"{DIR}/ssh",
                              "PATH": f"{OPENMPI_VENV}/bin:{os.environ['PATH']}"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with h5py.File(out, "r") as f:
        assert "Open MPI" in f.attrs["mpi_library"]
    assert ranks_of(out) == [("node1", 0, 0, 1, ""), ("node2", 0, 0, 1, "")]
    assert_same_cells(out, one_node(n=2))


def job_state(job: str) -> dict:
    proc = on("head", "scontrol", "-o", "show", "job", job, timeout=30)
    return dict(kv.split("=", 1) for kv in proc.stdout.split() if "=" in kv)


def test_the_slurm_template_requeued_mid_grid_resumes_by_itself_and_completes(
        cluster, one_node, tmp_path):
    """sbatch run/slurm.sbatch on 2 nodes x 2 ranks (its one group of 4 spans both nodes and
    pins GPUs per node), `scontrol requeue` once a cell is done: the ranks stop cleanly, the
    job runs again, resumes its file and ends COMPLETED with the one-node cells."""
    out, log = str(tmp_path / "r.h5"), str(tmp_path / "job.out")
    proc = on("head", "env", f"OUTPUT={out}", "sbatch", "--parsable", "-N2",
              "--ntasks-per-node=2", "--cpus-per-task=1", "--gpus-per-node=2", f"--output={log}",
              "run/slurm.sbatch", TINY, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = proc.stdout.strip()
    wait_for(lambda: cells_done(out) >= 1, 300, "the first cell")
    assert on("head", "scontrol", "requeue", job, timeout=30).returncode == 0
    state = wait_for(lambda: (s := job_state(job))["JobState"] in ("COMPLETED", "FAILED") and s,
                     600, "the requeued job to end", poll=2)
    text = open(log).read()
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", (state, text)
    assert "DUE TO JOB REQUEUE" in text and "lth-mpi: stopped: SIGTERM" in text, text
    assert "lth-mpi: resuming" in text, text
    from lth_mpi import results
    assert results.read(out).status == "complete"
    assert_same_cells(out, one_node("--set", "parallel.group_size=4"))
    assert ranks_of(out) == [("node1", 0, 0, 1, "0"), ("node1", 0, 1, 1, "1"),
                             ("node2", 0, 0, 1, "0"), ("node2", 0, 1, 1, "1")]


def test_a_node_lost_mid_grid_fails_the_job_and_resume_on_the_other_completes(
        cluster, one_node, tmp_path):
    """Every process of node2 killed once a cell is done: srun ends non-zero, the file keeps
    every cell finished, status says dead, and --resume on node1 alone (one group of 2: the
    same groups as before) completes the grid with the one-node cells. Last: node2 stays down."""
    out = str(tmp_path / "r.h5")
    job = subprocess.Popen([*CLUSTER, "exec", "head", "srun", "-N2", "-n4", *RUN, "--output", out],
                           cwd=ROOT, env=ENV_C, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        wait_for(lambda: cells_done(out) >= 1, 300, "the first cell")
        assert subprocess.run([*CLUSTER, "kill", "node2"], env=ENV_C, timeout=60).returncode == 0
        text = job.communicate(timeout=300)[0]
    finally:
        job.kill()
    assert job.returncode != 0, text
    kept = cells_of(out)
    assert kept, "the finished cells were lost"
    reference = one_node()
    for name, cell in kept.items():
        for key in ("train_loss", "test_accuracy"):
            assert list(cell[key]) == list(reference[name][key]), name
    time.sleep(6 * 0.5 + 1)              # past results.STALE at LTH_HEARTBEAT=0.5
    status = subprocess.run([sys.executable, "-m", "lth_mpi", "status", out], capture_output=True,
                            text=True, env=ENV_C)
    assert f"{out}: dead:" in status.stdout, status.stdout + status.stderr
    wait_for(lambda: on("head", "sinfo", "-h", "-n", "node1", "-o", "%t").stdout.strip() == "idle",
             120, "node1 to be free")
    proc = on("head", "srun", "-N1", "-w", "node1", "-n2", *RUN, "--output", out, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(kept)} of {len(reference)} cells already done" in proc.stdout
    assert_same_cells(out, reference)
