"""Reference super-resolution and denoising models, built with PyTorch's default initialization.

Every model is a plain ``nn.Module`` of standard layers (plus a few parameter-free ops: ``MeanShift``,
``SimpleGate``; and NAFNet's ``LayerNorm2d``). Nothing here initializes weights: that is the library's job.

Example:
    >>> import initwise.zoo as zoo
    >>> model = zoo.build("edsr", scale=2)
    >>> zoo.info("edsr").input
    'lr'
"""

from ._common import MeanShift as MeanShift
from ._common import Upsampler as Upsampler
from ._dncnn import DnCNN as DnCNN
from ._dncnn import dncnn as dncnn
from ._edsr import EDSR as EDSR
from ._edsr import ResBlock as ResBlock
from ._edsr import edsr as edsr
from ._espcn import espcn as espcn
from ._fsrcnn import fsrcnn as fsrcnn
from ._nafnet import LayerNorm2d as LayerNorm2d
from ._nafnet import NAFBlock as NAFBlock
from ._nafnet import NAFNetLite as NAFNetLite
from ._nafnet import SimpleGate as SimpleGate
from ._nafnet import SimplifiedChannelAttention as SimplifiedChannelAttention
from ._nafnet import nafnet as nafnet
from ._rcan import RCAB as RCAB
from ._rcan import RCAN as RCAN
from ._rcan import ChannelAttention as ChannelAttention
from ._rcan import ResidualGroup as ResidualGroup
from ._rcan import rcan as rcan
from ._registry import MODELS as MODELS
from ._registry import ModelInfo as ModelInfo
from ._registry import build as build
from ._registry import info as info
from ._registry import list_models as list_models
from ._srcnn import srcnn as srcnn
from ._vdsr import VDSR as VDSR
from ._vdsr import vdsr as vdsr

__all__ = [
    "EDSR", "MODELS", "RCAB", "RCAN", "VDSR", "ChannelAttention", "DnCNN", "LayerNorm2d", "MeanShift",
    "ModelInfo", "NAFBlock", "NAFNetLite", "ResBlock", "ResidualGroup", "SimpleGate",
    "SimplifiedChannelAttention", "Upsampler", "build", "dncnn", "edsr", "espcn", "fsrcnn", "info",
    "list_models", "nafnet", "rcan", "srcnn", "vdsr",
]
