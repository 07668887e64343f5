"""The model families serkit knows, by name: one line per family.

The config names the family (``model: tim_net``) or gives a family object (``model: !new:...``).
Families are imported on first use, so a family's dependencies (openSMILE, scikit-learn ...) are
only needed when it is used.
"""
from __future__ import annotations

import importlib

from serkit.errors import SerkitError
from serkit.model.family import ModelFamily

FAMILIES = {
    "w2v2_mtl": "serkit.model.w2v2_mtl:W2V2MTLFamily",
    "egemaps_svm": "serkit.model.egemaps:EgemapsSVMFamily",
    "sta_crnn": "serkit.model.sta_crnn:STACRNNFamily",
    "tim_net": "serkit.model.tim_net:TIMNetFamily",
    "ssl_probe": "serkit.model.ssl_probe:SSLProbeFamily",
    "nlinear": "serkit.model.nlinear:NLinearFamily",
    "dlinear": "serkit.model.dlinear:DLinearFamily",
    "vggish_bilstm": "serkit.model.vggish_bilstm:VGGishBiLSTMFamily",
    "amrwc": "serkit.model.amrwc:AMRWCFamily",
    "multilevel": "serkit.model.multilevel:MultiLevelFamily",
}


class UnknownFamilyError(SerkitError):
    """A config names a model family serkit does not have."""


def get_family(name_or_family) -> ModelFamily:
    """The family object for a registered name, or the given :class:`ModelFamily` itself."""
    if isinstance(name_or_family, ModelFamily):
        return name_or_family
    name = str(name_or_family)
    if name not in FAMILIES:
        raise UnknownFamilyError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))} "
                                 "(set `model:` in the config or pass --model)")
    module_name, class_name = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


def family_names() -> list[str]:
    return sorted(FAMILIES)
