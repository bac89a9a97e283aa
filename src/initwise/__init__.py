"""initwise: layer-aware weight initialization for PyTorch.

Correct fans for grouped, depthwise, transposed, strided and packed layers; gains computed for any activation;
``torch.nn.init``-compatible initializers; whole-model tracing, planning, diagnostics and advice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it. The modules (and torch) are imported when a name is first used, not
# by ``import initwise``: the ``initwise`` command then starts inside its own Ctrl-C handling, and a Ctrl-C
# during torch's import ends in one line and exit status 130 instead of a traceback (PEP 562).
_WHERE: dict[str, str] = {
    **dict.fromkeys(["Activation", "activation_names", "resolve_activation"], "._activations"),
    **dict.fromkeys(["Advice", "CandidateResult", "advise"], "._advise"),
    **dict.fromkeys(["InitInterrupted", "PartialInitError"], "._apply"),
    **dict.fromkeys(["init_"], "._init"),
    **dict.fromkeys(["CANDIDATES", "Candidate", "candidate"], "._candidates"),
    **dict.fromkeys(["generate_candidates"], "._candidate_set"),
    **dict.fromkeys(["lsuv_"], "._lsuv"),
    **dict.fromkeys(["Fans", "fans", "tensor_fans"], "._fans"),
    **dict.fromkeys(["LayerProfile", "Profile", "SchemeProfile", "Stats", "diagnose"], "._diagnose"),
    **dict.fromkeys(["Moments", "gain", "moments"], "._gains"),
    **dict.fromkeys(["Graph", "LayerInfo", "Node", "trace"], "._graph"),
    **dict.fromkeys(["kaiming_normal_", "kaiming_uniform_", "lecun_normal_", "lecun_uniform_", "truncated_normal_std",
                     "variance_scaling_", "xavier_normal_", "xavier_uniform_"], "._initializers"),
    **dict.fromkeys(["SCHEMES", "LayerPlan", "ParamPlan", "Plan", "parse_scheme", "plan"], "._plan"),
    **dict.fromkeys(["icnr_", "identity_", "orthogonal_"], "._structured"),
}

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from ._activations import Activation as Activation
    from ._advise import Advice as Advice
    from ._advise import CandidateResult as CandidateResult
    from ._advise import advise as advise
    from ._apply import InitInterrupted as InitInterrupted
    from ._apply import PartialInitError as PartialInitError
    from ._init import init_ as init_
    from ._candidates import CANDIDATES as CANDIDATES
    from ._candidates import Candidate as Candidate
    from ._candidates import candidate as candidate
    from ._candidate_set import generate_candidates as generate_candidates
    from ._lsuv import lsuv_ as lsuv_
    from ._activations import activation_names as activation_names
    from ._activations import resolve_activation as resolve_activation
    from ._fans import Fans as Fans
    from ._diagnose import LayerProfile as LayerProfile
    from ._diagnose import Profile as Profile
    from ._diagnose import SchemeProfile as SchemeProfile
    from ._diagnose import Stats as Stats
    from ._diagnose import diagnose as diagnose
    from ._fans import fans as fans
    from ._fans import tensor_fans as tensor_fans
    from ._gains import Moments as Moments
    from ._graph import Graph as Graph
    from ._graph import LayerInfo as LayerInfo
    from ._graph import Node as Node
    from ._graph import trace as trace
    from ._gains import gain as gain
    from ._gains import moments as moments
    from ._initializers import kaiming_normal_ as kaiming_normal_
    from ._initializers import kaiming_uniform_ as kaiming_uniform_
    from ._initializers import lecun_normal_ as lecun_normal_
    from ._initializers import lecun_uniform_ as lecun_uniform_
    from ._initializers import truncated_normal_std as truncated_normal_std
    from ._initializers import variance_scaling_ as variance_scaling_
    from ._initializers import xavier_normal_ as xavier_normal_
    from ._initializers import xavier_uniform_ as xavier_uniform_
    from ._plan import SCHEMES as SCHEMES
    from ._plan import LayerPlan as LayerPlan
    from ._plan import ParamPlan as ParamPlan
    from ._plan import Plan as Plan
    from ._plan import parse_scheme as parse_scheme
    from ._plan import plan as plan
    from ._structured import icnr_ as icnr_
    from ._structured import identity_ as identity_
    from ._structured import orthogonal_ as orthogonal_


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "LayerProfile", "Profile", "SchemeProfile", "Stats", "diagnose",
    "Advice", "CandidateResult", "advise", "CANDIDATES", "Candidate", "candidate", "generate_candidates", "lsuv_", "SCHEMES", "Graph", "LayerInfo", "LayerPlan", "Node", "ParamPlan", "Plan", "init_", "InitInterrupted", "PartialInitError", "parse_scheme", "plan",
    "trace",
    "Activation", "Fans", "Moments", "activation_names", "fans", "gain", "icnr_", "identity_", "kaiming_normal_",
    "kaiming_uniform_", "lecun_normal_", "lecun_uniform_", "moments", "orthogonal_", "resolve_activation",
    "tensor_fans", "truncated_normal_std", "variance_scaling_", "xavier_normal_", "xavier_uniform_",
]
