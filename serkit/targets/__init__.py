"""Training targets as plug-ins: the contract (:mod:`.base`), the registry (:mod:`.registry`), one module each."""
from serkit.targets.base import Target, TargetError
from serkit.targets.registry import TARGETS, TargetSet, stage1_files, target_class, target_classes
