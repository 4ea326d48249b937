"""Reading ``face_yolov8n.pt`` without ultralytics (expression-editor.md §2.7, yolov8_face README §3).

The file is a ``torch.save`` archive whose pickle holds an ultralytics ``DetectionModel`` object.
A restricted unpickler turns every ultralytics and ``torch.nn.modules`` class into an inert
container module, admits torch's tensor rebuild helpers and a few plain metadata types, and
refuses every other global, so loading runs no code from the file. The tensors are then copied
strictly into the in-house ``YoloV8``.
"""
from __future__ import annotations

import collections
import dataclasses
import pickle
import re
import types
from pathlib import Path

import torch
from torch import nn

from pipelines.common.checkpoint import config_for, load_strict
from pipelines.common.yolo_face import YOLOV8_BACKBONE, YOLOV8_HEAD, YoloV8, YoloV8Config


class PickledModule(nn.Module):
    """Stands in for a pickled module class: pickle's BUILD fills ``_modules``/``_parameters``/
    ``_buffers`` and the plain attributes, which is all a state dict needs."""

    pickled_path = ""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, *args, **kwargs):
        raise TypeError(f"{self.pickled_path} is a pickled container and cannot run")


class PickledValue:
    """Stands in for harmless metadata objects (namespaces, paths, numpy scalars)."""

    pickled_path = ""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)


class DillPickledCheckpoint(pickle.UnpicklingError):
    """The original Bingsu upload was pickled with dill; expression-editor.md §2.7 refuses it."""


_MODULE_NAMES = re.compile(r"^(ultralytics(\..+)?|torch\.nn\.modules\..+)$")
_METADATA = {
    ("types", "SimpleNamespace"), ("argparse", "Namespace"),
    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype"),
}
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
}
_stand_ins: dict[tuple[str, str], type] = {}


def _stand_in(module: str, name: str, base: type) -> type:
    key = (module, name)
    if key not in _stand_ins:
        _stand_ins[key] = type(name, (base,), {"pickled_path": f"{module}.{name}"})
    return _stand_ins[key]


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module.startswith("dill"):
            raise DillPickledCheckpoint(
                "this face_yolov8n.pt was pickled with dill (the original 2023 upload); "
                "install the re-uploaded file pinned in the weights manifest")
        if _MODULE_NAMES.match(module):
            return _stand_in(module, name, PickledModule)
        if (module, name) in _METADATA:
            return _stand_in(module, name, PickledValue)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}, which is not allowed")


def _restricted_load(file, **kwargs):
    return RestrictedUnpickler(file, **kwargs).load()


# torch.load takes a module exposing Unpickler and load.
restricted_pickle = types.ModuleType("restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = _restricted_load


def read_ultralytics_checkpoint(path: Path) -> dict:
    return torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=restricted_pickle)


def pickled_model(checkpoint: dict) -> PickledModule:
    """The detection model of a checkpoint: ``ema`` when a training checkpoint kept it, else ``model``."""
    model = checkpoint.get("ema") if checkpoint.get("ema") is not None else checkpoint.get("model")
    if not isinstance(model, PickledModule) or type(model).__name__ != "DetectionModel":
        raise ValueError("checkpoint holds no ultralytics DetectionModel")
    return model


def pickled_state(module: PickledModule, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers under dotted names, read straight from the recorded
    ``_parameters``/``_buffers``/``_modules`` (no state-dict hooks from the file can run)."""
    skipped = getattr(module, "_non_persistent_buffers_set", set())
    entries = list(module._parameters.items()) + [(k, v) for k, v in module._buffers.items() if k not in skipped]
    state = {}
    for name, value in entries:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
        state[prefix + name] = value.detach()
    for name, child in module._modules.items():
        if child is not None:
            state.update(pickled_state(child, f"{prefix}{name}."))
    return state


def _pickled_submodules(model: PickledModule, kind: str) -> list:
    return [m for m in model.modules() if type(m).__name__ == kind]


def _scale_of(yaml: dict) -> list:
    scale = yaml.get("scale")
    if scale is None:
        # Older releases left the scale implicit in the file name (yolov8n.yaml → "n").
        scale = re.search(r"yolov\d+([nslmx])", str(yaml.get("yaml_file", ""))).group(1)
    return yaml["scales"][scale]


def config_from_checkpoint(model: PickledModule) -> YoloV8Config:
    """Architecture and attributes recorded in the pickle (expression-editor.md §2.7: read them, don't assume them)."""
    yaml = model.yaml
    if [list(r) for r in yaml["backbone"]] != YOLOV8_BACKBONE or [list(r) for r in yaml["head"]] != YOLOV8_HEAD:
        raise ValueError("checkpoint is not a YOLOv8 detection model (its yaml layout differs)")
    depth, width, max_channels = _scale_of(yaml)
    (detect,) = _pickled_submodules(model, "Detect")
    eps = {m.eps for m in _pickled_submodules(model, "BatchNorm2d")}
    if len(eps) != 1:
        raise ValueError(f"checkpoint mixes BatchNorm eps values {sorted(eps)}")
    return YoloV8Config(
        nc=int(yaml["nc"]), depth_multiple=float(depth), width_multiple=float(width),
        max_channels=int(max_channels), reg_max=int(detect.reg_max), bn_eps=float(eps.pop()),
        strides=tuple(float(s) for s in model.stride.tolist()),
    )


# Layer attributes that shape the computation but are not tensors.
_ATTRIBUTES = {
    nn.Conv2d: ("kernel_size", "stride", "padding", "dilation", "groups"),
    nn.BatchNorm2d: ("eps",),
    nn.MaxPool2d: ("kernel_size", "stride", "padding"),
    nn.Upsample: ("scale_factor", "mode"),
}


def check_layer_attributes(network: nn.Module, model: PickledModule) -> None:
    """Every conv/pool/upsample/BN attribute and Bottleneck shortcut of ``network`` equals the pickle's."""
    pickled = dict(model.named_modules())
    for name, module in network.named_modules():
        names = _ATTRIBUTES.get(type(module), ("add",) if type(module).__name__ == "Bottleneck" else ())
        for attribute in names:
            ours, theirs = getattr(module, attribute), getattr(pickled[name], attribute)
            if ours != theirs and not (isinstance(ours, float) and float(theirs) == ours):
                raise ValueError(f"{name}.{attribute}: checkpoint has {theirs!r}, network {ours!r}")


def load_yolo_face(path: Path, device: str | torch.device = "cpu") -> YoloV8:
    """``face_yolov8n.pt`` (or a tiny checkpoint in the same layout) → float32 ``YoloV8`` in eval mode."""
    model = pickled_model(read_ultralytics_checkpoint(Path(path)))
    official = dataclasses.asdict(config_from_checkpoint(model))
    config = config_for(Path(path), official)
    config["strides"] = tuple(config["strides"])
    network = YoloV8(YoloV8Config(**config))
    # The checkpoint stores float16 (yolov8_face README §2); ultralytics runs it after .float().
    state = {k: v.float() if v.is_floating_point() else v for k, v in pickled_state(model).items()}
    load_strict(network, state, f"YOLOv8 face detector {Path(path).name}")
    check_layer_attributes(network, model)
    return network.to(device)
