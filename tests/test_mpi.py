"""MPI tests under real mpiexec at 2 and 4 ranks (the scripts work at any size)."""
import pytest

from mpi_helpers import mpiexec

SIZES = [2, 4]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("script", ["check_broadcast.py", "check_groups.py"])
def test_collectives(n, script):
    proc = mpiexec(n, [f"tests/mpi/{script}"], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout


@pytest.mark.parametrize("n", SIZES)
def test_data_parallel_group_of_two(n):
    """n=2: one Horovod group of 2; n=4: two independent groups of 2 at once."""
    proc = mpiexec(n, ["tests/mpi/check_data_parallel.py", "2"], timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "data parallel OK" in proc.stdout
