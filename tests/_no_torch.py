"""A script that runs an exported file through gfldet.deploy where torch, onnx, openvino and nncf cannot be
imported (a runtime-only install): ``python -c NO_TORCH_RUN FILE IMAGES.npz DETS.npz``; it fails if torch was
imported. Shared by the deploy tests."""

NO_TORCH_RUN = r'''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):  # a runtime-only install: none of these can be imported
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "onnx", "onnxscript", "openvino", "nncf"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, Block())
import numpy as np
from gfldet.deploy import load
images = list(np.load(sys.argv[2]).values())
dets = load(sys.argv[1])(images)
np.savez(sys.argv[3], **{f"{i}_{k}": v for i, d in enumerate(dets) for k, v in d.items()})
assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "onnx")], "torch was imported"
'''
