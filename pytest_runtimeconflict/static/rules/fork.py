"""Fork rules: threads that do not survive fork.

A forked child has one thread, the one that called ``fork``; every other thread of the parent
(a library's worker pool, its scheduler, a runtime's helper) is gone, while the memory that
says the pool is running, and any lock or condition one of those threads held or waited on, is
copied. Code that then hands work to the pool waits forever (or crashes on its state). Named
by the diagnosis from a live run (the ``fork-after-workload`` probe, or a step that forks);
an OpenMP runtime's pool keeps its own rule, ``openmp-fork-hang``, when the forked child
waits in an OpenMP runtime.
"""

from __future__ import annotations

from pytest_runtimeconflict.static.rules.registry import Rule, register

FORK_UNSAFE_THREADS = register(
    Rule(
        id="fork-unsafe-threads",
        family="threads",
        severity="error",
        summary="a library's threads do not survive fork: the forked child hangs or crashes",
        scope="run",
        cause=(
            "{module} started threads of its own ({threads}); after fork the child has none "
            "of them, and running the workload again there {how} in {libs}"
        ),
        author_advice=(
            "make the library fork-safe: register pthread_atfork handlers that reset the pool "
            "(mark it not started, re-initialise its locks and conditions) in the child, or "
            "detect the pid change and start a new pool; document that the package needs the "
            "'spawn' or 'forkserver' start method until then"
        ),
        untried_hint=(
            "use multiprocessing.get_context('spawn') (or 'forkserver'), or fork before the "
            "first computation starts the library's threads"
        ),
        load_independent=True,
    )
)
