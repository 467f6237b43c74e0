"""Data-parallel training: re-exported from :mod:`flowforge.fit.distributed`, where it moved
(the engine's part, shared by every objective)."""

from flowforge.fit.distributed import (
    ObjectiveModule,
    World,
    broadcast_object,
    check_in_sync,
    from_main,
    gather_rows,
    init_world,
    initialize_from_batch,
    launch_from_env,
    launch_local,
    main_first,
    rank_device,
    shard,
    shutdown,
    wrap_ddp,
)

__all__ = [
    "ObjectiveModule",
    "World",
    "broadcast_object",
    "check_in_sync",
    "from_main",
    "gather_rows",
    "init_world",
    "initialize_from_batch",
    "launch_from_env",
    "launch_local",
    "main_first",
    "rank_device",
    "shard",
    "shutdown",
    "wrap_ddp",
]
