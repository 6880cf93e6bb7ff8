"""The process's open-file limit: every connection is a file, so the connection bound must sit
below it, or a few hundred idle connections exhaust the files before the bound evicts any (and
the listener, the store and the chain client fail with EMFILE, the validator's request with them)."""

from __future__ import annotations

import resource

OTHER_FILES = 256  # what is not a connection: the store, a model's files, logs, pipes to workers, the chain


def connections_allowed(wanted: int) -> int:
    """Raise the soft open-file limit to fit `wanted` connections and the miner's other files, as
    far as the hard limit allows (what `ulimit -n` or systemd's `LimitNOFILE=` set); returns how
    many connections fit under the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + OTHER_FILES
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - OTHER_FILES))
