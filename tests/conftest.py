"""Fixtures shared by the whole suite, and the stack it runs on in its header."""
import pytest

from mpi_helpers import TINY, cluster_reason, lth


def pytest_report_header(config):
    """What the suite tests: Horovod built and tested, or absent and why (its tests skip);
    the two-node cluster's tests run, or why not."""
    from lth_mpi.comm.stack import stack
    return [f"stack: {stack()}",
            f"cluster: {cluster_reason() or 'the two-node cluster tests run (run/cluster.sh)'}"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """run(n, *options) -> (path, process): the tiny search at n ranks run to its end once per
    session for each set of options, shared by every test that reads a finished run (a test
    that changes the file works on a copy). Each search costs mpiexec, the TensorFlow import
    and the training: sharing them is most of what keeps the suite short."""
    cache = {}

    def run(n: int, *options: str):
        if (n, options) not in cache:
            out = str(tmp_path_factory.mktemp(f"tiny{n}") / "r.h5")
            cache[n, options] = (out, lth(n, TINY, "--output", out, *options))
        return cache[n, options]
    return run
