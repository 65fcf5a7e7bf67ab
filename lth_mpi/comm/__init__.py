"""The parallel layer: the one package that touches mpi4py and Horovod (docs/design.md).

world: ranks, groups, agreeing before acting, failing alike; stop: SIGTERM/SIGINT stop the
whole job cleanly; queue: groups take the next cell as they free up; channel: finished cells
to the writer, in one wire format; reducers: the collectives a data-parallel trainer needs
(a Group), with mpi4py or Horovod. data_prep uses world too.

Rules: every rank calls every collective; a decision made on one rank is shared before
anyone acts on it; arrays move with buffer methods (Bcast, Gatherv, Send); waiting ranks
sleep in a non-blocking barrier, because MPICH's blocking calls spin and would steal the
cores of the rank still computing.
"""
