"""Bad input to ``load_clip`` and the checkpoint readers: each case is a clear error naming the
argument or file and what was received, or a documented fallback that gives the right model."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from clipguide import load_clip
from clipguide.model.checkpoints import CheckpointError, WeightsNotFoundError, read_weights
from clipguide.testing import save_openclip_dir, tiny_openclip_model

WEIGHTS = "open_clip_model.safetensors"
CONFIG = "open_clip_config.json"


@pytest.fixture(scope="module")
def oc():
    return tiny_openclip_model(seed=3)


@pytest.fixture(scope="module")
def good_dir(oc, tmp_path_factory) -> Path:
    return save_openclip_dir(oc, tmp_path_factory.mktemp("good"))


def _copy(good: Path, tmp: Path) -> Path:
    folder = tmp / "model"
    shutil.copytree(good, folder)
    return folder


def _weights(folder: Path) -> bytes:
    return (folder / WEIGHTS).read_bytes()


def _write_header(folder: Path, header) -> None:
    """Replace the safetensors header (keeping the data) with ``header`` (any JSON value)."""
    data = _weights(folder)
    (n,) = struct.unpack("<Q", data[:8])
    raw = json.dumps(header).encode()
    (folder / WEIGHTS).write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def _header(folder: Path) -> dict:
    data = _weights(folder)
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])


def _edit_config(folder: Path, edit: Callable[[dict], object]) -> None:
    cfg = json.loads((folder / CONFIG).read_text())
    edit(cfg)
    (folder / CONFIG).write_text(json.dumps(cfg))


# -- checkpoint files in an open_clip folder (local-dir:) -------------------------------------
def _cut(fraction: float):
    def make(folder: Path) -> None:
        data = _weights(folder)
        (folder / WEIGHTS).write_bytes(data[: int(len(data) * fraction)])

    return make


def _first_entry(edit: Callable[[dict], None]):
    def make(folder: Path) -> None:
        header = _header(folder)
        key = next(k for k in header if k != "__metadata__")
        edit(header[key])
        _write_header(folder, header)

    return make


def _all_ints(folder: Path) -> None:
    header = {k: v for k, v in _header(folder).items() if k != "__metadata__"}
    tensors = {k: torch.zeros(v["shape"], dtype=torch.int32) for k, v in header.items()}
    save_file(tensors, folder / WEIGHTS)


def _wider(folder: Path) -> None:
    def edit(cfg):
        cfg["model_cfg"]["vision_cfg"]["width"] *= 2
        cfg["model_cfg"]["text_cfg"]["width"] *= 2

    _edit_config(folder, edit)


def _drop(*keys: str):
    def make(folder: Path) -> None:
        def edit(cfg):
            for key in keys:
                del cfg["model_cfg"][key]

        _edit_config(folder, edit)

    return make


def _set(key: str, value):
    def make(folder: Path) -> None:
        _edit_config(folder, lambda cfg: cfg["model_cfg"].__setitem__(key, value))

    return make


def _write(name: str, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


# (id, how to spoil the folder, load_clip keyword arguments, error, text the message must hold)
# "{w}" / "{c}" / "{d}" stand for the weights file, the config file and the folder.
FOLDER_CASES = [
    ("safetensors-empty", _write(WEIGHTS, b""), {}, CheckpointError, ["{w}", "empty (0 bytes)"]),
    ("safetensors-4-bytes", _write(WEIGHTS, b"\x01\x02\x03\x04"), {}, CheckpointError,
     ["{w}", "4 bytes", "8-byte header length"]),
    ("safetensors-cut-in-header", _cut(0.0005), {}, CheckpointError,
     ["{w}", "header claims", "truncated"]),
    ("safetensors-1TiB-header",
     lambda f: (f / WEIGHTS).write_bytes(struct.pack("<Q", 2**40) + _weights(f)[8:]), {},
     CheckpointError, ["{w}", "1099511627776 bytes"]),
    ("safetensors-cut-99.9%", _cut(0.999), {}, CheckpointError, ["{w}", "truncated"]),
    ("safetensors-cut-half", _cut(0.5), {}, CheckpointError, ["{w}", "truncated"]),
    ("safetensors-header-not-json",
     lambda f: (f / WEIGHTS).write_bytes(struct.pack("<Q", 6) + b"{oops!" + b"\0" * 64), {},
     CheckpointError, ["{w}", "not JSON"]),
    ("safetensors-header-a-list", lambda f: _write_header(f, [1, 2]), {}, CheckpointError,
     ["{w}", "JSON list"]),
    ("safetensors-entry-without-offsets", _first_entry(lambda m: m.pop("data_offsets")), {},
     CheckpointError, ["{w}", "data_offsets"]),
    ("safetensors-unknown-dtype", _first_entry(lambda m: m.update(dtype="I4")), {},
     CheckpointError, ["{w}", "'I4'", "supported"]),
    ("safetensors-offsets-disagree-with-shape",
     _first_entry(lambda m: m.update(shape=[s + 1 for s in m["shape"]])), {}, CheckpointError,
     ["{w}", "needs", "bytes"]),
    ("safetensors-negative-offset",
     _first_entry(lambda m: m.update(data_offsets=[-4, m["data_offsets"][1]])), {},
     CheckpointError, ["{w}", "-4"]),
    ("safetensors-integer-weights", _all_ints, {}, CheckpointError,
     ["{d}", "integers", "torch.int32"]),
    ("config-not-json", _write(CONFIG, b"{not json"), {}, CheckpointError, ["{c}", "not valid JSON"]),
    ("config-empty", _write(CONFIG, b""), {}, CheckpointError, ["{c}", "not valid JSON"]),
    ("config-a-list", _write(CONFIG, b"[1, 2]"), {}, CheckpointError, ["{c}", "JSON list"]),
    ("config-binary", _write(CONFIG, b"\xff\xfe\x00garbage"), {}, CheckpointError,
     ["{c}", "not valid JSON"]),
    ("config-without-vision_cfg", _drop("vision_cfg"), {}, CheckpointError, ["{c}", "'vision_cfg'"]),
    ("config-without-text_cfg", _drop("text_cfg"), {}, CheckpointError, ["{c}", "'text_cfg'"]),
    ("config-without-embed_dim", _drop("embed_dim"), {}, CheckpointError, ["{c}", "'embed_dim'"]),
    ("config-embed_dim-a-string", _set("embed_dim", "32"), {}, CheckpointError,
     ["{c}", "embed_dim='32'", "number"]),
    ("config-vision_cfg-a-list", _set("vision_cfg", [48]), {}, CheckpointError,
     ["{c}", "vision_cfg=[48]", "object"]),
    ("config-preprocess_cfg-a-list",
     lambda f: _edit_config(f, lambda cfg: cfg.__setitem__("preprocess_cfg", [1])), {},
     CheckpointError, ["{c}", "preprocess_cfg"]),
    ("config-and-weights-of-different-widths", _wider, {}, CheckpointError,
     ["{d}", "differ in shape", "do not fit the config"]),
    ("vision-only-still-needs-vision_cfg", _drop("vision_cfg"), {"towers": ("vision",)},
     CheckpointError, ["{c}", "'vision_cfg'"]),
    ("no-weights-file", lambda f: (f / WEIGHTS).unlink(), {}, WeightsNotFoundError,
     ["{d}", "no weights file"]),
    ("no-config-file", lambda f: (f / CONFIG).unlink(), {}, FileNotFoundError,
     ["{d}", "open_clip_config.json"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spoil", "kwargs", "error", "needles"),
    [pytest.param(*case[1:], id=case[0]) for case in FOLDER_CASES],
)
def test_spoilt_openclip_folder_is_a_clear_error(
    good_dir, tmp_path, spoil, kwargs, error, needles
) -> None:
    folder = _copy(good_dir, tmp_path)
    spoil(folder)
    with pytest.raises(error) as info:
        load_clip(f"local-dir:{folder}", **kwargs)
    message = str(info.value)
    names = {"{w}": str(folder / WEIGHTS), "{c}": str(folder / CONFIG), "{d}": str(folder)}
    for needle in needles:
        assert names.get(needle, needle) in message, message


def _same_model(a, b) -> bool:
    image = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        same_image = (a.encode_image(image) - b.encode_image(image)).abs().max() < 1e-6
        if a.text_model is None:
            return bool(same_image)
        ta, tb = a.encode_text(["a red circle"]), b.encode_text(["a red circle"])
        return bool(same_image and (ta.pooled - tb.pooled).abs().max() < 1e-6)


def test_vision_only_needs_no_text_cfg(good_dir, tmp_path) -> None:
    """Documented fallback: a config without text_cfg still gives its vision tower alone."""
    folder = _copy(good_dir, tmp_path)
    _drop("text_cfg")(folder)
    clip = load_clip(f"local-dir:{folder}", towers=("vision",))
    assert _same_model(clip, load_clip(f"local-dir:{good_dir}", towers=("vision",)))


# -- checkpoint files given as ``pretrained=`` to a model name ---------------------------------
class NotATensor:
    pass


def _pickle(obj) -> Callable[[Path, object], None]:
    return lambda path, oc: torch.save(obj, path)


PRETRAINED_CASES = [
    ("pickle-empty", "w.bin", lambda p, oc: p.write_bytes(b""), ["{p}", "empty (0 bytes)"]),
    ("pickle-garbage", "w.bin", lambda p, oc: p.write_bytes(b"hello world " * 20),
     ["{p}", "not a readable torch checkpoint"]),
    ("pickle-truncated-zip", "w.pt",
     lambda p, oc: (torch.save(oc.state_dict(), p), p.write_bytes(p.read_bytes()[:5000])),
     ["{p}", "not a readable torch checkpoint"]),
    ("pickle-holds-an-object", "w.pt", _pickle({"x": NotATensor()}),
     ["{p}", "weights_only=True"]),
    ("pickle-holds-a-list", "w.pt", _pickle([torch.zeros(2)]), ["{p}", "holds a list"]),
    ("pickle-of-another-model", "w.pt", _pickle({"layer.weight": torch.zeros(2, 2)}),
     ["{p}", "'token_embedding.weight'"]),
    ("pickle-wider-model", "w.pt",
     lambda p, oc: torch.save({k: torch.cat([v, v], -1) if v.dim() else v
                               for k, v in oc.state_dict().items()}, p),
     ["{p}", "clipguide-tiny", "differ in shape"]),
    ("safetensors-of-another-model", "w.safetensors",
     lambda p, oc: save_file({"layer.weight": torch.zeros(2, 2)}, p),
     ["{p}", "'token_embedding.weight'"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "make", "needles"), [pytest.param(*c[1:], id=c[0]) for c in PRETRAINED_CASES]
)
def test_bad_checkpoint_file_is_a_clear_error(oc, tmp_path, name, make, needles) -> None:
    path = tmp_path / name
    make(path, oc)
    with pytest.raises(CheckpointError) as info:
        load_clip("clipguide-tiny", pretrained=str(path))
    for needle in needles:
        assert needle.replace("{p}", str(path)) in str(info.value), str(info.value)


@pytest.mark.parametrize("form", ["legacy-pickle", "safetensors-named-bin", "zip-pickle"])
def test_supported_checkpoint_forms_load_exactly(oc, tmp_path, form) -> None:
    """Documented: pickles old and new (weights_only=True) and safetensors by content."""
    path = tmp_path / "w.bin"
    if form == "legacy-pickle":
        torch.save(oc.state_dict(), path, _use_new_zipfile_serialization=False)
    elif form == "zip-pickle":
        torch.save({"state_dict": oc.state_dict()}, path)
    else:
        save_file(oc.state_dict(), path)
    clip = load_clip("clipguide-tiny", pretrained=str(path))
    save_file(oc.state_dict(), tmp_path / "reference.safetensors")
    assert _same_model(
        clip, load_clip("clipguide-tiny", pretrained=str(tmp_path / "reference.safetensors"))
    )


def test_truncated_safetensors_never_yields_uninitialised_tensors(good_dir, tmp_path) -> None:
    """The file cut to 99.9 % used to load with its last tensor full of whatever was in memory."""
    data = _weights(good_dir)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: int(len(data) * 0.999)])
    with pytest.raises(CheckpointError, match="truncated"):
        read_weights(cut, lambda key: True)
    # the tensors before the cut are still checked one read at a time: keep only the last one
    last = max(_header(good_dir).items(), key=lambda kv: kv[1].get("data_offsets", [0])[0])[0]
    with pytest.raises(CheckpointError, match=last.replace(".", r"\.")):
        read_weights(cut, lambda key: key == last)


# -- load_clip's own arguments -------------------------------------------------------------------
def _no_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _one_cuda(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


ARGUMENT_CASES = [
    ("source-unknown-name", {"source": "no-such-model"}, None, ValueError,
     ["source='no-such-model'", "Accepted"]),
    ("source-an-int", {"source": 12345}, None, TypeError, ["source", "int"]),
    ("source-a-list", {"source": ["ViT-bigG-14"]}, None, TypeError, ["source", "list"]),
    ("source-missing-local-dir", {"source": "local-dir:/nonexistent/folder"}, None,
     FileNotFoundError, ["/nonexistent/folder", "does not exist"]),
    ("source-missing-hub-repo", {"source": "nobody/no-such-clip"}, "offline",
     WeightsNotFoundError, ["'nobody/no-such-clip'", "local-dir:"]),
    ("source-missing-hf-hub", {"source": "hf-hub:nobody/no-such-clip"}, "offline",
     WeightsNotFoundError, ["'nobody/no-such-clip'", "hf download"]),
    ("pretrained-unknown-tag", {"source": "clipguide-tiny", "pretrained": "not-a-tag"}, None,
     ValueError, ["pretrained='not-a-tag'", "known tags"]),
    ("pretrained-missing-file", {"source": "clipguide-tiny", "pretrained": "/nowhere/w.bin"},
     None, ValueError, ["pretrained='/nowhere/w.bin'", "neither a file"]),
    ("towers-unknown", {"source": "clipguide-tiny", "pretrained": None, "towers": ("audio",)},
     None, ValueError, ["towers=('audio',)", "subset"]),
    ("towers-empty", {"source": "clipguide-tiny", "pretrained": None, "towers": ()}, None,
     ValueError, ["towers=()", "non-empty"]),
    ("dtype-fp8-name", {"source": "clipguide-tiny", "pretrained": None, "dtype": "fp8"}, None,
     ValueError, ["dtype='fp8'", "fp32"]),
    ("dtype-int8", {"source": "clipguide-tiny", "pretrained": None, "dtype": torch.int8}, None,
     ValueError, ["dtype=torch.int8", "floating-point"]),
    ("dtype-bool", {"source": "clipguide-tiny", "pretrained": None, "dtype": torch.bool}, None,
     ValueError, ["dtype=torch.bool", "floating-point"]),
    ("dtype-a-number", {"source": "clipguide-tiny", "pretrained": None, "dtype": 16}, None,
     ValueError, ["dtype=16", "fp16"]),
    ("device-nonsense", {"source": "clipguide-tiny", "pretrained": None, "device": "nonsense"},
     None, ValueError, ["device='nonsense'", "accepted here: ['cpu'"]),
    ("device-meta", {"source": "clipguide-tiny", "pretrained": None, "device": "meta"}, None,
     ValueError, ["device='meta'", "not supported"]),
    ("device-cuda-absent", {"source": "clipguide-tiny", "pretrained": None, "device": "cuda"},
     _no_cuda, ValueError, ["device='cuda'", "no cuda device"]),
    ("device-cuda-index-too-high",
     {"source": "clipguide-tiny", "pretrained": None, "device": "cuda:7"}, _one_cuda, ValueError,
     ["device='cuda:7'", "1 cuda device"]),
    ("device-a-number", {"source": "clipguide-tiny", "pretrained": None, "device": 3}, None,
     TypeError, ["device", "int"]),
    ("resnet-vision-tower", {"source": "RN50", "pretrained": None}, None,
     ValueError, ["layers=[3, 4, 6, 3]", "ResNet"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "setup", "error", "needles"),
    [pytest.param(*c[1:], id=c[0]) for c in ARGUMENT_CASES],
)
def test_bad_load_clip_argument_is_a_clear_error(
    kwargs, setup, error, needles, monkeypatch, tmp_path
) -> None:
    if setup == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        kwargs = {**kwargs, "cache_dir": str(tmp_path)}
    elif setup is not None:
        setup(monkeypatch)
    with pytest.raises(error) as info:
        load_clip(**kwargs)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


# -- transformers-layout folders ---------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_dir(oc, tmp_path_factory) -> Path:
    import open_clip
    from transformers import CLIPModel

    from clipguide.model.convert import clip_config_from_openclip, openclip_to_transformers

    folder = tmp_path_factory.mktemp("hf")
    model = CLIPModel(clip_config_from_openclip(open_clip.get_model_config("clipguide-tiny")))
    model.load_state_dict(openclip_to_transformers(oc.state_dict()), strict=False)
    model.save_pretrained(folder)
    return folder


def _hf_edit(edit: Callable[[dict], None]):
    def make(folder: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        edit(cfg)
        (folder / "config.json").write_text(json.dumps(cfg))

    return make


def _hf_wider(cfg: dict) -> None:
    cfg["text_config"]["hidden_size"] *= 2
    cfg["text_config"]["intermediate_size"] *= 2


HF_CASES = [
    ("config-not-json", _write("config.json", b"{"), CheckpointError,
     ["{d}/config.json", "not valid JSON"]),
    ("config-wrong-model-type", _hf_edit(lambda c: c.__setitem__("model_type", "bert")),
     ValueError, ["{d}/config.json", "model_type='bert'"]),
    ("no-weights", lambda f: (f / "model.safetensors").unlink(), WeightsNotFoundError,
     ["{d}", "model.safetensors"]),
    ("weights-truncated", lambda f: (f / "model.safetensors").write_bytes(
        (f / "model.safetensors").read_bytes()[:-100]), CheckpointError,
     ["{d}/model.safetensors", "truncated"]),
    ("config-wider-than-weights", _hf_edit(_hf_wider), CheckpointError,
     ["{d}", "do not fit the config"]),
    ("preprocessor-config-not-json", _write("preprocessor_config.json", b"[oops"),
     CheckpointError, ["{d}/preprocessor_config.json", "not valid JSON"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spoil", "error", "needles"), [pytest.param(*c[1:], id=c[0]) for c in HF_CASES]
)
def test_spoilt_transformers_folder_is_a_clear_error(
    hf_dir, tmp_path, spoil, error, needles
) -> None:
    folder = tmp_path / "hf"
    shutil.copytree(hf_dir, folder)
    spoil(folder)
    with pytest.raises(error) as info:
        load_clip(str(folder))
    for needle in needles:
        assert needle.replace("{d}", str(folder)) in str(info.value), str(info.value)


# -- the hub, when it is asked (not offline) -----------------------------------------------------
def _hub_error(cls, message: str) -> Exception:
    """A huggingface_hub error without the HTTP response its constructor wants."""
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


@pytest.mark.parametrize(
    ("raised", "needles"),
    [
        pytest.param("LocalEntryNotFoundError", ["not in the local Hugging Face cache"],
                     id="hub-unreachable"),
        pytest.param("RepositoryNotFoundError", ["'nobody/no-such-clip' is not a repository"],
                     id="hub-no-such-repo"),
        pytest.param("RemoteEntryNotFoundError",
                     ["'nobody/no-such-clip' holds none of: config.json"], id="hub-no-such-file"),
    ],
)  # fmt: skip
def test_hub_answers_are_told_apart(raised, needles, monkeypatch, tmp_path) -> None:
    import huggingface_hub
    import huggingface_hub.errors as errors

    def download(repo_id, filename, **kwargs):
        if kwargs.get("local_files_only"):
            raise _hub_error(errors.LocalEntryNotFoundError, "not cached")
        raise _hub_error(getattr(errors, raised), f"{raised} for {repo_id}/{filename}")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(WeightsNotFoundError) as info:
        load_clip("nobody/no-such-clip", cache_dir=str(tmp_path))
    for needle in needles:
        assert needle in str(info.value), str(info.value)
