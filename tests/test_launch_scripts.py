"""The launch scripts in run/: Slurm templates a cluster would accept, usage lines that name real
configs, and run/mpiexec.sh adding what each MPI needs. The templates also run for real, with a
stand-in `srun` that launches through run/mpiexec.sh on this machine."""
import glob
import os
import re
import stat
import subprocess

import h5py
import pytest

from mpi_helpers import ENV, ROOT

TEMPLATES = sorted(glob.glob(os.path.join(ROOT, "run", "*.sbatch")))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "run", "*.sh"))) + TEMPLATES
# sbatch options the templates may use, and what their values must look like
POSITIVE = r"[1-9][0-9]*"
SBATCH = {"job-name": r"[\w.-]+", "nodes": POSITIVE, "ntasks": POSITIVE,
          "ntasks-per-node": POSITIVE, "gpus-per-node": POSITIVE, "cpus-per-task": POSITIVE,
          "time": r"([0-9]+-)?[0-9]{1,2}:[0-9]{2}:[0-9]{2}", "output": r"\S*%j\S*",
          "error": r"\S*%j\S*", "partition": r"\S+", "account": r"\S+", "mem": r"[0-9]+[KMGT]?",
          "signal": r"(B:)?[A-Z0-9]+(@[0-9]+)?", "requeue": r"", "open-mode": r"append|truncate"}
# the small grid the real runs use: synthetic data, one epoch of 8 steps, 2 masks x 2 rewinds
SMALL = ["--set", "dataset.name=synthetic", "--set", "dataset.train_examples=400",
         "--set", "dataset.test_examples=100", "--set", "train.epochs=1",
         "--set", "train.batch_size=50", "--set", "controls=[]",
         "--set", "rewind.unit=iteration", "--set", "rewind.points=[0, 4]"]
CONFIG = "tests/configs/tiny_fashion.yaml"


def sbatch_lines(path):
    """The #SBATCH lines Slurm reads: those before the first command."""
    out = []
    for line in open(path).read().splitlines()[1:]:
        if line.startswith("#SBATCH"):
            out.append(line)
        elif line.strip() and not line.startswith("#"):
            break
    return out


@pytest.mark.parametrize("path", TEMPLATES, ids=os.path.basename)
def test_template_is_valid_slurm(path):
    assert subprocess.run(["bash", "-n", path]).returncode == 0
    text = open(path).read()
    lines = sbatch_lines(path)
    assert len(lines) == text.count("\n#SBATCH"), "an #SBATCH line after the first command is ignored"
    opts = {}
    for line in lines:
        m = re.fullmatch(r"#SBATCH --([a-z-]+)(?:=(\S+))?", line)
        assert m, f"not an '#SBATCH --option=value' line: {line!r}"
        key, value = m.group(1), m.group(2) or ""
        assert key in SBATCH, f"unknown sbatch option --{key}"
        assert re.fullmatch(SBATCH[key], value), f"--{key}={value}"
        opts[key] = value
    assert {"nodes", "ntasks-per-node", "cpus-per-task", "time", "output"} <= set(opts)
    # srun (Slurm >= 22.05) does not inherit --cpus-per-task: every srun must be given it
    body = text[text.index(lines[-1]):]
    sruns = [i for i, l in enumerate(body.splitlines())
             if re.match(r"\s*(python3 -m lth_mpi\.outcome )?srun\b", l)]
    assert sruns
    export = re.search(r"^export SRUN_CPUS_PER_TASK=\$\{?SLURM_CPUS_PER_TASK", body, re.M)
    for i in sruns:
        line = body.splitlines()[i]
        assert "--cpus-per-task" in line or (export and body[:export.start()].count("\n") < i), line


def test_usage_lines_name_configs_that_exist():
    named = set()
    for path in SCRIPTS + [os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "*.md")):
        named |= set(re.findall(r"\b((?:run|tests)/configs/[\w.-]+\.ya?ml)\b", open(path).read()))
    assert named
    missing = sorted(c for c in named if not os.path.exists(os.path.join(ROOT, c)))
    assert not missing, f"named but absent: {missing}"


def fake_bin(tmp_path, name, body):
    """An executable NAME in tmp_path/bin, to stand in for a cluster's command."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    f = d / name
    f.write_text("#!/bin/bash\n" + body)
    f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return str(d)


def slurm_env(tmp_path, submit_dir, ntasks, run_for_real):
    """Slurm's environment for a batch job on one node of `ntasks` tasks, and an srun that
    records its environment and options, then (if asked) runs the step with run/mpiexec.sh."""
    srun = fake_bin(tmp_path, "srun", f"""
echo "SRUN_CPUS_PER_TASK=${{SRUN_CPUS_PER_TASK:-unset}} $*" >> {tmp_path}/srun.log
n=$SLURM_NTASKS
while [[ $1 == -* ]]; do [[ $1 == --ntasks=* ]] && n=${{1#*=}}; shift; done
{"exec bash " + ROOT + "/run/mpiexec.sh -n $n " + '"$@"' if run_for_real else "exit 0"}
""")
    return dict(ENV, PATH=srun + os.pathsep + ENV["PATH"], SLURM_SUBMIT_DIR=str(submit_dir),
                SLURM_JOB_ID="4242", SLURM_CPUS_PER_TASK="3", SLURM_NTASKS=str(ntasks),
                SLURM_NTASKS_PER_NODE=str(ntasks), SLURM_JOB_NUM_NODES="1")


def srun_calls(tmp_path):
    return open(tmp_path / "srun.log").read().splitlines()


def test_slurm_template_names_output_by_job_and_config(tmp_path):
    """Submitted from a checkout (here: a copy of run/ and the configs), the job makes results/
    and writes results/<config>-<job id>.h5; every srun gets the cpus per task."""
    submit = tmp_path / "checkout"
    submit.mkdir()
    for d in ("run", "tests"):
        os.symlink(os.path.join(ROOT, d), submit / d)
    env = slurm_env(tmp_path, submit, 20, run_for_real=False)
    proc = subprocess.run(["bash", os.path.join(ROOT, "run", "slurm.sbatch"), CONFIG],
                          env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (submit / "results").is_dir()
    [call] = srun_calls(tmp_path)
    assert call.startswith("SRUN_CPUS_PER_TASK=3 --cpu-bind=cores python3 -m mpi4py -m lth_mpi run")
    assert "--output results/tiny_fashion-4242.h5" in call and "--resume" in call
    # a missing config is refused before srun
    proc = subprocess.run(["bash", os.path.join(ROOT, "run", "slurm.sbatch"), "run/configs/nope.yaml"],
                          env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "no config file run/configs/nope.yaml" in proc.stderr
    assert len(srun_calls(tmp_path)) == 1


def test_slurm_template_runs_a_search(tmp_path):
    out = tmp_path / "new" / "dir" / "r.h5"
    env = dict(slurm_env(tmp_path, ROOT, 2, run_for_real=True), OUTPUT=str(out))
    proc = subprocess.run(["bash", os.path.join(ROOT, "run", "slurm.sbatch"), CONFIG, *SMALL,
                           "--set", "parallel.group_size=2"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with h5py.File(out, "r") as f:
        assert f.attrs["status"] == "complete" and f.attrs["world_size"] == 2
        assert len(f["cells"]) == 4


def test_scaling_template_runs_each_p_and_the_study(tmp_path):
    out = tmp_path / "study"
    env = dict(slurm_env(tmp_path, ROOT, 2, run_for_real=True), OUT=str(out), GROUP_SIZE="1")
    proc = subprocess.run(["bash", os.path.join(ROOT, "run", "scaling.sbatch"), CONFIG, "1", "2",
                           "--", *SMALL], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = srun_calls(tmp_path)
    assert len(calls) == 2 and all(c.startswith("SRUN_CPUS_PER_TASK=3 --nodes=1") for c in calls)
    assert "--ntasks=1 " in calls[0] and "--ntasks=2 " in calls[1]
    assert (out / "results_P1.h5").exists() and (out / "results_P2.h5").exists()
    assert "Amdahl" in (out / "scaling.txt").read_text() and (out / "scaling.png").exists()
    # a P above the allocation is refused before any step
    proc = subprocess.run(["bash", os.path.join(ROOT, "run", "scaling.sbatch"), CONFIG, "4"],
                          env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2 and "at most 2" in proc.stderr and len(srun_calls(tmp_path)) == 2


@pytest.mark.parametrize("version, root_flag", [
    ("mpiexec (OpenRTE) 4.1.4", True), ("mpiexec (Open MPI) 5.0.3", True),
    ("HYDRA build details:\n    Version:   4.0.2", False)])
def test_mpiexec_wrapper_adds_what_the_mpi_needs(tmp_path, version, root_flag):
    """Open MPI gets --oversubscribe, --allow-run-as-root (as root) and -x for the environment;
    MPICH none of them; a host file is passed to either."""
    bindir = fake_bin(tmp_path, "mpiexec", f"""
[ "$1" = --version ] && {{ printf '%s\\n' "{version}"; exit 0; }}
printf '%s\\n' "$@"
""")
    env = dict(ENV, PATH=bindir + os.pathsep + ENV["PATH"], HOSTFILE="hosts.txt")
    proc = subprocess.run(["bash", os.path.join(ROOT, "run", "mpiexec.sh"), "-n", "4", "python3",
                           "x.py"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.splitlines()
    assert args[-4:] == ["-n", "4", "python3", "x.py"]
    assert args[:2] == ["-hostfile", "hosts.txt"]
    openmpi = "Open" in version
    assert ("--oversubscribe" in args) == openmpi
    assert ("--allow-run-as-root" in args) == (openmpi and os.geteuid() == 0)
    assert (args.count("-x") > 0) == openmpi and ("PATH" in args) == openmpi
