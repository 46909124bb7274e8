"""What a model costs before it is trained: size, compute, memory and time per epoch.

Everything comes from the model's config on PyTorch's meta device (shapes, no
weights read): parameters are counted on the bare backbone, FLOPs with
PyTorch's FlopCounterMode over a forward pass of one input (training = 3x
forward: the backward pass costs about twice the forward), and activation
memory as the tensors the forward pass saves for the backward.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ft_cli.errors import FtError

# Bytes per trained parameter: fp32 weight 4 + gradient 4 + AdamW's two moments 8.
TRAINING_STATE_BYTES = 16

# ft tasks each transformers model family has a head for, by the Auto mapping that lists it.
HEAD_MAPPINGS = {
    "classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "token_classification": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
    "mlm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "image_classification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "audio_classification": "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
    "speech_recognition": "MODEL_FOR_CTC_MAPPING_NAMES",
    "causal_lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "seq2seq": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "semantic_segmentation": "MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES",
    "object_detection": "MODEL_FOR_OBJECT_DETECTION_MAPPING_NAMES",
}

# Families a mapping lists that a task still does not start from: an encoder's causal-LM
# class (BERT's) is a decoder mode of a bidirectional model, not a GPT-style model.
NOT_WITH = {"causal_lm": ("MODEL_FOR_MASKED_LM_MAPPING_NAMES",)}

# Hub checkpoints whose architecture is their family's config defaults (as transformers
# documents each config class), so a table can show them without the network.
DEFAULT_ARCHITECTURES = {
    "bert-base-uncased": "bert",
    "google/vit-base-patch16-224-in21k": "vit",
    "google/vit-base-patch16-224": "vit",
    "microsoft/resnet-50": "resnet",
    "facebook/convnext-tiny-224": "convnext",
    "facebook/wav2vec2-base": "wav2vec2",
    "MIT/ast-finetuned-audioset-10-10-0.4593": "audio-spectrogram-transformer",
    "nvidia/mit-b0": "segformer",
    "facebook/detr-resnet-50": "detr",
    "PekingU/rtdetr_r50vd": "rt_detr",
    "gpt2": "gpt2",
    "google-t5/t5-small": "t5",
}
AUDIO_RATE = 16_000  # samples a second a waveform model reads (the usual checkpoints')


@dataclass
class Profile:
    name: str
    family: str
    heads: list[str]
    params: int  # the backbone's
    params_without_embeddings: int
    layers: int
    width: int
    unit: str  # what FLOPs are counted per: "tokens", "images" or "seconds" (of audio)
    input_size: float  # tokens per row, the image side in pixels, or seconds per clip
    train_flops: float  # per token, per image, or per second of audio
    activation_bytes: float  # saved for backward by one batch (fp32)
    batch: int
    domain: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def state_bytes(self) -> int:
        """Weights, gradients and AdamW state, all in fp32, every parameter trained."""
        return self.params * TRAINING_STATE_BYTES

    def epoch_seconds(self, rows: int, flops_per_second: float) -> float:
        """Seconds per epoch of `rows` at a rate of `flops_per_second`."""
        per_row = self.train_flops * (1 if self.unit == "images" else self.input_size)
        return rows * per_row / flops_per_second


def load_config(name: str, trust_remote_code: bool = False) -> tuple[Any, str]:
    """(the transformers config, a note when it comes from the family's defaults)."""
    from ft_cli.config.schema import ModelConfig
    from ft_cli.models import model

    try:
        return model.load_config(
            ModelConfig(name_or_path=name, trust_remote_code=trust_remote_code)
        ), ""
    except FtError:
        family = DEFAULT_ARCHITECTURES.get(name)
        if family is None:
            raise
    from transformers import AutoConfig

    return AutoConfig.for_model(family), "config not cached: the family's default architecture"


def heads_of(family: str) -> list[str]:
    from transformers.models.auto import modeling_auto

    def listed(mapping: str) -> bool:
        return family in getattr(modeling_auto, mapping, {})

    return [
        task
        for task, mapping in HEAD_MAPPINGS.items()
        if listed(mapping) and not any(listed(m) for m in NOT_WITH.get(task, ()))
    ]


def is_vision(config: Any) -> bool:
    """Images in (a detector's channels are its backbone's)."""
    seen = hasattr(config, "num_channels") or hasattr(
        getattr(config, "backbone_config", None), "num_channels"
    )
    return seen and not hasattr(config, "vocab_size")


def backbone(config: Any) -> Any:
    """The bare model on the meta device: shapes only."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        return AutoModel.from_config(config)


def count_params(net: Any) -> tuple[int, int]:
    """(all parameters, those outside the embeddings group: token, position and patch
    tables, a convolutional stem)."""
    from ft_cli.strategies import layers

    total = sum(p.numel() for p in net.parameters())
    group_of = layers.groups_of(net)
    embedded = sum(p.numel() for n, p in net.named_parameters() if group_of[n] == layers.EMBEDDINGS)
    return total, total - embedded


def audio_input(net: Any, batch: int) -> tuple[dict[str, Any], float] | None:
    """(a batch of the audio a model reads, the seconds each row holds), or None for a model
    of tokens or images: a second of waveform, or the spectrogram its config fixes (AST's
    frames x bins, Whisper's bins x 30 s; 100 frames a second)."""
    import torch

    config = net.config
    if net.main_input_name == "input_values" and hasattr(config, "num_mel_bins"):  # AST
        shape, seconds = (config.max_length, config.num_mel_bins), config.max_length / 100
    elif net.main_input_name == "input_values":
        shape, seconds = (AUDIO_RATE,), 1.0
    elif net.main_input_name == "input_features" and hasattr(config, "max_source_positions"):
        frames = 2 * config.max_source_positions  # Whisper: two frames a position
        shape, seconds = (config.num_mel_bins, frames), frames / 100
    else:
        return None
    return {net.main_input_name: torch.zeros(batch, *shape, device="meta")}, seconds


def dummy_inputs(config: Any, batch: int, size: int) -> dict[str, Any]:
    import torch

    if is_vision(config):
        channels = getattr(config, "num_channels", None) or config.backbone_config.num_channels
        return {"pixel_values": torch.zeros(batch, channels, size, size, device="meta")}
    ids = torch.zeros(batch, size, dtype=torch.long, device="meta")
    if getattr(config, "is_encoder_decoder", False):  # T5, BART: the target as long as the source
        return {"input_ids": ids, "decoder_input_ids": ids}
    return {"input_ids": ids}


def forward_flops(net: Any, inputs: dict[str, Any]) -> int:
    """FLOPs of one forward pass (matmuls, convolutions, attention), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        net(**inputs)
    return counter.get_total_flops()


def saved_activation_bytes(net: Any, inputs: dict[str, Any]) -> int:
    """Bytes of the tensors the forward pass keeps for the backward (parameters aside)."""
    import torch

    params = {id(p) for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        base = tensor._base if tensor._base is not None else tensor
        if id(base) not in params and id(tensor) not in params:
            seen[id(tensor)] = tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(**inputs)
    return sum(seen.values())


def measured_on_cpu(config: Any, size: int, batch: int) -> tuple[int, int]:
    """(forward FLOPs of one input, activations of `batch`) of a model whose forward cannot
    run on the meta device, built on the CPU and run on one blank input (activations grow
    with the batch)."""
    import torch
    from transformers import AutoModel

    net = AutoModel.from_config(config)
    inputs = {
        k: torch.zeros(v.shape, dtype=v.dtype) for k, v in dummy_inputs(config, 1, size).items()
    }
    return forward_flops(net, inputs), saved_activation_bytes(net, inputs) * batch


def image_side(config: Any, processor_size: int | None) -> int:
    if processor_size:
        return processor_size
    size = getattr(config, "image_size", 224)
    return size if isinstance(size, int) else int(size[0])


def profile(
    name: str,
    config: Any,
    seq: int,
    batch: int,
    image: int | None = None,
    domain: str = "",
    note: str = "",
) -> Profile:
    """The profile of a model at `seq` tokens (or `image` pixels a side) and `batch` rows."""
    from ft_cli.strategies import layers

    net = backbone(config)
    vision = is_vision(config)
    total, without = count_params(net)
    sound = audio_input(net, 1)
    if sound is not None:  # FLOPs per second of audio, memory of a batch of clips
        unit, size = "seconds", sound[1]
        flops = forward_flops(net, sound[0])
        per_input = flops / size
        activations = saved_activation_bytes(net, audio_input(net, batch)[0])  # type: ignore[index]
    else:
        unit = "images" if vision else "tokens"
        size = image_side(config, image) if vision else seq
        try:
            flops = forward_flops(net, dummy_inputs(config, 1, size))
            activations = saved_activation_bytes(net, dummy_inputs(config, batch, size))
        except RuntimeError:  # a forward that reads values (a detector's anchors): on the CPU
            flops, activations = measured_on_cpu(config, size, batch)
        per_input = flops if vision else flops / size
    sizes = getattr(config, "hidden_sizes", None)
    width = getattr(config, "hidden_size", None) or (sizes[-1] if sizes else 0)
    return Profile(
        name=name,
        family=config.model_type,
        heads=heads_of(config.model_type),
        params=total,
        params_without_embeddings=without,
        layers=layers.num_layers_of(net),
        width=int(width),
        unit=unit,
        input_size=size,
        train_flops=3 * per_input,
        activation_bytes=activations,
        batch=batch,
        domain=domain,
        notes=[note] if note else [],
    )


def card_domain(name: str) -> str:
    """Language, datasets and tags from the model card's front matter (folder or hub cache)."""
    text = _card_text(name)
    if not text.startswith("---"):
        return ""
    head = text.split("---", 2)[1] if text.count("---") >= 2 else ""
    found: dict[str, list[str]] = {}
    key = None
    for line in head.splitlines():
        match = re.match(r"^([A-Za-z_]+):\s*(.*)$", line)
        if match:
            key, value = match.group(1), match.group(2).strip()
            found[key] = [v.strip(" '\"") for v in value.strip("[]").split(",") if v.strip()]
        elif key and line.strip().startswith("- "):
            found.setdefault(key, []).append(line.strip()[2:].strip(" '\""))
    parts = []
    for wanted in ("language", "datasets", "pipeline_tag"):
        if found.get(wanted):
            parts.append(", ".join(found[wanted][:3]))
    return "; ".join(parts)


def _card_text(name: str) -> str:
    folder = Path(name)
    if folder.is_dir():
        card = folder / "README.md"
        return card.read_text(errors="replace") if card.is_file() else ""
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "README.md")
    except Exception:  # not a repo id, or no cache
        return ""
    return Path(cached).read_text(errors="replace") if isinstance(cached, str) else ""


def processor_side(folder: str) -> int | None:
    """The image side an image processor outputs, from its preprocessor_config.json."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return None
    values = json.loads(path.read_text())
    size = values.get("crop_size") or values.get("size") or {}
    if isinstance(size, int):
        return size
    return size.get("height") or size.get("shortest_edge")


def step_efficiency(dtype_name: str) -> float:
    """The share of the matmul rate a whole training step reaches here, measured once per
    machine on a 2-layer, 384-wide BERT (batch 16 x 128 tokens, AdamW): what turns the
    matmul peak into an estimate of real step times (attention, norms, the optimizer...)."""
    from ft_cli.hardware import remembered

    return remembered.value(f"step_efficiency_{dtype_name}", lambda: _measure_step(dtype_name))


def _measure_step(dtype_name: str) -> float:
    import statistics
    import time

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        hidden_size=384,
        num_hidden_layers=2,
        num_attention_heads=12,
        intermediate_size=1536,
        vocab_size=8192,
    )
    net = BertForSequenceClassification(config)
    ids = torch.randint(0, 8192, (16, 128))
    labels = torch.zeros(16, dtype=torch.long)
    meta = backbone(config)
    flops = 3 * forward_flops(meta, dummy_inputs(config, 16, 128))
    optimizer = torch.optim.AdamW(net.parameters())
    half = dtype_name == "bf16"
    times = []
    for _ in range(4):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half):
            loss = net(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    achieved = flops / statistics.median(times[1:])  # the first step warms the kernels up
    return min(achieved / matmul_flops_per_second(dtype_name), 1.0)


def matmul_flops_per_second(dtype_name: str) -> float:
    """This machine's measured matmul rate (remembered per machine), in FLOP/s."""
    import torch

    from ft_cli.hardware import device, remembered

    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    shape = (1024, 384, 1536)
    seconds = remembered.value(
        f"matmul_seconds_{dtype_name}", lambda: device._matmul_seconds(dtype, shape)
    )
    return 2 * shape[0] * shape[1] * shape[2] / seconds
