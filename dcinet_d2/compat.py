"""Every private name of Detectron2 (and of iopath) that dcinet_d2 uses, in one place.

Matches Detectron2 v0.6 (PyPI's ``pb1-detectron2==0.6`` with upstream's later fixes, as
``tools/install_detectron2.py`` builds it) and iopath 0.1.x. When upstream renames one of these,
this module is the only one to change; ``tests/test_compat.py`` checks that each still exists.
"""

from __future__ import annotations

__all__ = [
    "find_free_port",
    "set_local_process_group",
    "forget_cached_gloo_group",
    "postprocess_detections",
    "path_prefix_registered",
]


def find_free_port() -> int:
    """A free TCP port on this machine (``detectron2.engine.launch._find_free_port``)."""
    from detectron2.engine.launch import _find_free_port

    return _find_free_port()


def set_local_process_group(group) -> None:
    """Make ``group`` the per-machine process group that ``comm.get_local_rank()`` and
    ``comm.get_local_size()`` read (``detectron2.utils.comm._LOCAL_PROCESS_GROUP``, which
    Detectron2's own ``launch`` sets)."""
    from detectron2.utils import comm

    comm._LOCAL_PROCESS_GROUP = group


def forget_cached_gloo_group() -> None:
    """Drop the process group that ``comm.gather``/``comm.all_gather`` cache
    (``detectron2.utils.comm._get_global_gloo_group``, an ``lru_cache``). With gloo it is the
    default group itself: while cached, ``destroy_process_group`` leaves it alive until the
    interpreter exits, and its threads are then torn down in no particular order."""
    from detectron2.utils import comm

    comm._get_global_gloo_group.cache_clear()


def postprocess_detections(instances, batched_inputs, image_sizes) -> list:
    """Rescale detections to each input's requested ``height`` x ``width`` and wrap them as
    ``[{"instances": ...}]`` (``GeneralizedRCNN._postprocess``, a static method)."""
    from detectron2.modeling import GeneralizedRCNN

    return GeneralizedRCNN._postprocess(instances, batched_inputs, image_sizes)


def path_prefix_registered(path_manager, prefix: str) -> bool:
    """Whether an iopath ``PathManager`` has a handler for ``prefix`` (``_path_handlers``)."""
    return prefix in path_manager._path_handlers
