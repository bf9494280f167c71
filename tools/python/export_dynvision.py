#!/usr/bin/env python3
"""Exports a DynVision/PyTorch state dict (.pt) to safetensors for dynsim (engine/io/safetensors.h).

Usage: export_dynvision.py IN.pt OUT.safetensors [--weights-only]
Accepts a plain state_dict or a Lightning checkpoint ({'state_dict': ...}; a 'model.' prefix shared
by every key is stripped). Float tensors keep f32/f64, bf16/f16 become f32 (exact), integer and bool
buffers keep their dtype (n_residual_timesteps and flat_plane_mapping stay I64). Nothing is dropped:
dynsim's importer itself ignores DynVision's alias keys (addskip_*.source.*, tstep_*.tau).
Exit codes as dynsim's CLI: 64 usage, 65 bad input data, 66 missing input, 74 write failure.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

EX_USAGE, EX_DATAERR, EX_NOINPUT, EX_IOERR = 64, 65, 66, 74
METADATA = {"source": "export_dynvision.py", "format": "dynvision-state-dict"}


class Failure(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"export_dynvision.py: error: {message}", file=sys.stderr)
        sys.exit(EX_USAGE)


def state_dict_of(obj, path):
    """The tensor dict inside a loaded .pt: the object itself or a Lightning checkpoint's."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise Failure(EX_DATAERR, f"{path}: holds a {type(obj).__name__}, not a state_dict "
                      "(a dict of tensors) or a Lightning checkpoint with 'state_dict'")
    if not obj:
        raise Failure(EX_DATAERR, f"{path}: the state_dict is empty")
    if all(isinstance(k, str) and k.startswith("model.") for k in obj):
        obj = {k[len("model."):]: v for k, v in obj.items()}
    return obj


def to_numpy(name, t, path):
    import torch

    if not isinstance(t, torch.Tensor):
        raise Failure(EX_DATAERR, f"{path}: key '{name}' holds a {type(t).__name__}, not a tensor")
    if t.layout != torch.strided or t.is_quantized:
        raise Failure(EX_DATAERR, f"{path}: tensor '{name}' is {t.layout} / quantized; "
                      "only dense tensors can be exported")
    t = t.detach().cpu().contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.to(torch.float32)  # every bf16/f16 value is an f32 value: exact
    if t.is_complex():
        raise Failure(EX_DATAERR, f"{path}: tensor '{name}' is complex ({t.dtype})")
    return t.numpy()


def export(src, dst, weights_only=False):
    try:
        import torch
    except ImportError as e:
        raise Failure(EX_USAGE, f"PyTorch is needed to read {src} ({e}); "
                      "run with /usr/bin/python3 after installing python3-torch") from None
    if not os.path.isfile(src):
        raise Failure(EX_NOINPUT, f"{src}: no such file")
    try:
        kwargs = {"weights_only": True} if weights_only else {}
        obj = torch.load(src, map_location="cpu", **kwargs)
    except Exception as e:  # torch raises many kinds for a bad archive or pickle
        raise Failure(EX_DATAERR, f"{src}: cannot read as a PyTorch file: "
                      f"{type(e).__name__}: {e}") from None
    sd = state_dict_of(obj, src)
    arrays = {}
    for name, t in sd.items():
        if not isinstance(name, str):
            raise Failure(EX_DATAERR, f"{src}: key {name!r} is not a string")
        arrays[name] = to_numpy(name, t, src)
    try:
        safetensors_io.save(dst, arrays, METADATA)
    except safetensors_io.SafetensorsError as e:
        raise Failure(EX_DATAERR, f"{src}: {e}") from None
    except OSError as e:
        raise Failure(EX_IOERR, f"{dst}: cannot write: {e}") from None
    return arrays


def main(argv=None):
    ap = Parser(description=__doc__.split("\n")[0])
    ap.add_argument("input", metavar="IN.pt", help="state_dict or Lightning checkpoint")
    ap.add_argument("output", metavar="OUT.safetensors")
    ap.add_argument("--weights-only", action="store_true",
                    help="torch.load(weights_only=True): refuse arbitrary pickled objects")
    args = ap.parse_args(argv)
    try:
        arrays = export(args.input, args.output, args.weights_only)
    except Failure as e:
        print(f"export_dynvision.py: {e}", file=sys.stderr)
        return e.code
    print(f"wrote {len(arrays)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
