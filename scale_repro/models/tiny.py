"""Tiny random-init models of the paper's three architectures, with real processors.

Same classes as the real checkpoints (Qwen2.5-VL, Gemma-3, LLaVA-NeXT), a few hundred
thousand parameters, a byte-level BPE tokenizer trained locally on the synthetic task's
language, and each family's chat template. Saved as ordinary checkpoint directories
(safetensors) that ``AutoModelForImageTextToText`` and ``AutoProcessor`` load unchanged,
so the whole pipeline runs offline on a CPU. Deterministic for a seed.

Two image geometries: ``tiny`` (64-px images, a few dozen image tokens, fast) and ``real``
(the ``-real`` names: the real checkpoints' image processor settings and their vendored chat
templates, so an image costs as many tokens as with the real model: Qwen2.5-VL one token per
28x28 pixels between 3,136 and 12,845,056 pixels; Gemma-3 256 soft tokens at 896 px without
pan-and-scan; LLaVA-NeXT CLIP 336/14 tiles on the real grid pinpoints, 1.5k-2.9k tokens).
Token budgets, truncation and the SFT pre-flight are then exercised at real sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scale_repro.runs.rundir import publishing

TINY_VOCAB = 1024
IMAGE_SIZE = 64
# Part of the cache path: bump it whenever a change here changes what gets built, so an old
# cached build (e.g. one saved before tokenizers padded on the left) is never reused.
TINY_BUILD_VERSION = 2
CHAT_TEMPLATES = Path(__file__).parent / "chat_templates"

QWEN_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = (messages[0]['content'] if messages[0]['content'] is string else messages[0]['content'][0]['text']) + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

LLAVA_MISTRAL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}{{ ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% endif %}{{ '</s>' }}"
    "{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class TinySpec:
    name: str
    family: str  # qwen2_5_vl | gemma3 | llava_next | qwen3_vl | internvl
    real_counterpart: str
    geometry: str = "tiny"  # tiny | real: image processor settings and chat template
    width: int = 1  # 2: the "small" variant, twice as wide and deep (see _build_llava)
    paper: str | None = None  # a paper model's short name: its widths and vocabulary (PAPER_WIDTHS); GPU only


# The paper models' widths, from their hub repositories' config.json, for random-init models at
# full size (the ``-random`` names): `scale bench` and scripts/gpu_check.sh time them on a GPU with
# no download. Their tokenizer stays the tiny one (its ids fit the real vocabulary size); their
# image processor and chat template are the real ones (the ``real`` geometry).
PAPER_WIDTHS = {
    # Qwen/Qwen2.5-VL-3B-Instruct config.json: 3.75B parameters.
    "qwen2.5-vl-3b": {
        "text": dict(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        ),
        "vision": dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=2048,
            fullatt_block_indexes=[7, 15, 23, 31],
        ),
        "top": dict(tie_word_embeddings=True),
    },
    # google/gemma-3-4b-it config.json: 4.30B parameters (SigLIP so400m at 896 px).
    "gemma-3-4b": {
        "text": dict(
            vocab_size=262208,
            hidden_size=2560,
            intermediate_size=10240,
            num_hidden_layers=34,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=256,
            query_pre_attn_scalar=256,
            sliding_window=1024,
        ),
        "vision": dict(
            hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16
        ),
        "top": {},
    },
    # llava-hf/llava-v1.6-mistral-7b-hf config.json: 7.57B parameters (Mistral-7B, CLIP ViT-L/14-336).
    "llava-v1.6-mistral-7b": {
        "text": dict(
            vocab_size=32064,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
        ),
        "vision": dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            projection_dim=768,
        ),
        "top": {},
    },
    # The curriculum's backbones. Qwen/Qwen3-VL-8B-Instruct config.json: 8.77B parameters (its
    # model card: vision 0.58B, language 8.19B).
    "qwen3-vl-8b": {
        "text": dict(
            vocab_size=151936,
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        ),
        "vision": dict(
            depth=27,
            hidden_size=1152,
            intermediate_size=4304,
            num_heads=16,
            out_hidden_size=4096,
            num_position_embeddings=2304,
            deepstack_visual_indexes=[8, 16, 24],
        ),
        "top": dict(tie_word_embeddings=False),
    },
    # Qwen/Qwen2.5-VL-7B-Instruct config.json (Qwen2.5-7B and the 32-block 1280-wide tower).
    "qwen2.5-vl-7b": {
        "text": dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        ),
        "vision": dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=3584,
            fullatt_block_indexes=[7, 15, 23, 31],
        ),
        "top": dict(tie_word_embeddings=False),
    },
    # OpenGVLab/InternVL3-8B-hf: InternViT-300M-448px (24 layers, 1024 wide) and Qwen2.5-7B
    # (transformers' convert_internvl_weights_to_hf.py; the original config.json's llm_config).
    "internvl3-8b": {
        "text": dict(
            vocab_size=151674,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
        ),
        "vision": dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16
        ),
        "top": dict(tie_word_embeddings=False),
    },
    # OpenGVLab/InternVL3_5-8B-HF: the same InternViT-300M and Qwen3-8B.
    "internvl3.5-8b": {
        "text": dict(
            model_type="qwen3",
            vocab_size=151936,
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
        ),
        "vision": dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16
        ),
        "top": dict(tie_word_embeddings=False),
    },
}


def at_paper_widths(config, paper: str):
    """``config`` (a tiny model's) with the paper model's widths; its token ids and image geometry
    unchanged. Sub-configs are rebuilt, not patched, so what they derive from their sizes (Gemma-3's
    per-layer attention types, say) follows."""
    widths = PAPER_WIDTHS[paper]

    def rebuilt(sub, overrides):
        fields = {k: v for k, v in sub.to_dict().items() if k != "layer_types"}
        return {**fields, **overrides}

    top = config.to_dict()
    top["text_config"] = rebuilt(config.text_config, widths["text"])
    top["vision_config"] = rebuilt(config.vision_config, widths["vision"])
    top.update(widths["top"])
    return type(config)(**top)


GEOMETRIES = ("tiny", "real")
_FAMILIES = {
    "tiny-qwen2.5-vl": ("qwen2_5_vl", "Qwen/Qwen2.5-VL-3B-Instruct"),
    "tiny-gemma3": ("gemma3", "google/gemma-3-4b-it"),
    "tiny-llava-next": ("llava_next", "llava-hf/llava-v1.6-mistral-7b-hf"),
    # The staged curriculum's backbones ("From Seeing to Thinking").
    "tiny-qwen3-vl": ("qwen3_vl", "Qwen/Qwen3-VL-8B-Instruct"),
    "tiny-internvl": ("internvl", "OpenGVLab/InternVL3-8B-hf"),
}
TINY_MODELS = {
    **{name: TinySpec(name, family, real) for name, (family, real) in _FAMILIES.items()},
    **{
        f"{name}-real": TinySpec(f"{name}-real", family, real, "real")
        for name, (family, real) in _FAMILIES.items()
    },
    # The paper models at full size, random-init (GPU only; see PAPER_WIDTHS).
    **{
        f"{paper}-random": TinySpec(f"{paper}-random", family, real, "real", paper=paper)
        for paper, (family, real) in {
            "qwen2.5-vl-3b": _FAMILIES["tiny-qwen2.5-vl"],
            "gemma-3-4b": _FAMILIES["tiny-gemma3"],
            "llava-v1.6-mistral-7b": _FAMILIES["tiny-llava-next"],
            "qwen3-vl-8b": _FAMILIES["tiny-qwen3-vl"],
            "qwen2.5-vl-7b": ("qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct"),
            "internvl3-8b": _FAMILIES["tiny-internvl"],
            "internvl3.5-8b": ("internvl", "OpenGVLab/InternVL3_5-8B-HF"),
        }.items()
    },
    # Twice the width and depth of tiny-llava-next, for what the tiny widths cannot learn.
    "small-llava-next": TinySpec(
        "small-llava-next", "llava_next", "llava-hf/llava-v1.6-mistral-7b-hf", width=2
    ),
}


def tiny_name(name: str, geometry: str) -> str:
    """The tiny model with ``name``'s architecture and the given image geometry."""
    base = name.removesuffix("-real")
    return base if geometry == "tiny" else f"{base}-real"


def real_chat_template(family: str) -> str:
    return (CHAT_TEMPLATES / f"{family}.jinja").read_text()


SPECIAL_TOKENS = {
    "qwen2_5_vl": [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ],
    "gemma3": [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    ],
    "llava_next": ["<unk>", "<s>", "</s>", "<image>", "[INST]", "[/INST]"],
    "internvl": [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<img>",
        "</img>",
        "<IMG_CONTEXT>",
        "<video>",
    ],
}
SPECIAL_TOKENS["qwen3_vl"] = SPECIAL_TOKENS["qwen2_5_vl"]


def train_tokenizer(family: str, vocab_size: int = TINY_VOCAB):
    """A byte-level BPE tokenizer learnt on the synthetic task's text, wrapped as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from scale_repro.data.synth import tokenizer_corpus

    specials = SPECIAL_TOKENS[family]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(tokenizer_corpus(), trainer=trainer)

    if family in ("qwen2_5_vl", "qwen3_vl"):
        kwargs = dict(
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            extra_special_tokens={
                "image_token": "<|image_pad|>",
                "video_token": "<|video_pad|>",
                "vision_bos_token": "<|vision_start|>",
                "vision_eos_token": "<|vision_end|>",
            },
        )
    elif (
        family == "internvl"
    ):  # the names InternVLProcessor reads (transformers' conversion script sets them)
        kwargs = dict(
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            extra_special_tokens={
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>",
            },
        )
    elif family == "gemma3":
        kwargs = dict(
            bos_token="<bos>",
            eos_token="<eos>",
            pad_token="<pad>",
            unk_token="<unk>",
            extra_special_tokens={
                "boi_token": "<start_of_image>",
                "eoi_token": "<end_of_image>",
                "image_token": "<image_soft_token>",
            },
        )
    else:
        kwargs = dict(
            bos_token="<s>",
            eos_token="</s>",
            unk_token="<unk>",
            pad_token="<unk>",
            extra_special_tokens={"image_token": "<image>"},
        )
    # Left padding, as generation needs; TRL's collators choose the side explicitly for training.
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, padding_side="left", **kwargs)


def _build_qwen(tokenizer, seed: int, vocab_size: int, real: bool):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    ids = tokenizer.convert_tokens_to_ids
    hidden = 64
    # Real: Qwen/Qwen2.5-VL-3B-Instruct's preprocessor_config.json and vision config.
    patch, window = (14, 112) if real else (8, 32)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32768 if real else 4096,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=patch,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=window,
            out_hidden_size=hidden,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    min_pixels, max_pixels = (3136, 12845056) if real else (IMAGE_SIZE * IMAGE_SIZE,) * 2
    image_processor = Qwen2VLImageProcessor(
        patch_size=patch, merge_size=2, temporal_patch_size=2, min_pixels=min_pixels, max_pixels=max_pixels
    )
    video_processor = Qwen2VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=real_chat_template("qwen2_5_vl") if real else QWEN_TEMPLATE,
    )
    return model, processor


def _build_gemma(tokenizer, seed: int, vocab_size: int, real: bool):
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
    )

    ids = tokenizer.convert_tokens_to_ids
    # Real: google/gemma-3-4b-it, 896-px SigLIP with 14-px patches pooled to 256 soft tokens.
    mm_tokens, image_size, patch = (256, 896, 14) if real else (16, IMAGE_SIZE, 8)
    config = Gemma3Config(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            query_pre_attn_scalar=16,
            max_position_embeddings=4096,
            sliding_window=512,
            pad_token_id=ids("<pad>"),
            eos_token_id=[ids("<eos>"), ids("<end_of_turn>")],
            bos_token_id=ids("<bos>"),
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
            vision_use_head=False,
        ),
        mm_tokens_per_image=mm_tokens,
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
    )
    model = Gemma3ForConditionalGeneration(config)
    image_processor = Gemma3ImageProcessor(
        size={"height": image_size, "width": image_size}, do_pan_and_scan=False
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=real_chat_template("gemma3") if real else GEMMA_TEMPLATE,
        image_seq_length=mm_tokens,
    )
    return model, processor


def _build_llava(tokenizer, seed: int, vocab_size: int, real: bool, width: int = 1):
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next import LlavaNextImageProcessor

    ids = tokenizer.convert_tokens_to_ids
    if real:  # llava-hf/llava-v1.6-mistral-7b-hf: CLIP ViT-L/14 at 336 px and its grid pinpoints
        tile, patch = 336, 14
        pinpoints = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    else:
        tile, patch = IMAGE_SIZE // 2, 8
        pinpoints = [[tile, tile], [tile, 2 * tile], [2 * tile, tile], [2 * tile, 2 * tile]]
    config = LlavaNextConfig(
        text_config=dict(
            model_type="mistral",
            vocab_size=vocab_size,
            hidden_size=64 * width,
            intermediate_size=128 * width,
            num_hidden_layers=2 * width,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16 * width,
            max_position_embeddings=32768 if real else 4096,
            sliding_window=None,
            bos_token_id=ids("<s>"),
            eos_token_id=ids("</s>"),
            pad_token_id=ids("<unk>"),
        ),
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=32 * width,
            intermediate_size=64 * width,
            num_hidden_layers=2 * width,
            num_attention_heads=2,
            image_size=tile,
            patch_size=patch,
            projection_dim=32 * width,
        ),
        image_token_index=ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=(tile // patch) ** 2,
    )
    model = LlavaNextForConditionalGeneration(config)
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": tile},
        crop_size={"height": tile, "width": tile},
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        chat_template=real_chat_template("llava_next") if real else LLAVA_MISTRAL_TEMPLATE,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )
    return model, processor


def _build_qwen3_vl(tokenizer, seed: int, vocab_size: int, real: bool):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl import Qwen3VLVideoProcessor

    ids = tokenizer.convert_tokens_to_ids
    hidden = 64
    # Real: Qwen/Qwen3-VL-8B-Instruct's preprocessor_config.json: 16-px patches merged 2 x 2 (one
    # token per 32 x 32 pixels) between 65,536 and 16,777,216 pixels, mean and std 0.5.
    patch = 16 if real else 8
    min_pixels, max_pixels = (65536, 16777216) if real else (IMAGE_SIZE * IMAGE_SIZE,) * 2
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=32768 if real else 4096,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=patch,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=hidden,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0, 1],
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    model = Qwen3VLForConditionalGeneration(config)
    image_processor = Qwen2VLImageProcessor(
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2),
        chat_template=real_chat_template("qwen3_vl") if real else QWEN_TEMPLATE,
    )
    return model, processor


def _build_internvl(tokenizer, seed: int, vocab_size: int, real: bool):
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
    from transformers.models.got_ocr2 import GotOcr2ImageProcessor
    from transformers.models.internvl import InternVLVideoProcessor

    ids = tokenizer.convert_tokens_to_ids
    # Real: OpenGVLab/InternVL3-8B-hf: 448-px tiles (up to 12 and a thumbnail) of 14-px patches,
    # pixel-shuffled by 0.5 to 256 tokens a tile (transformers' convert_internvl_weights_to_hf.py).
    tile, patch, max_tiles = (448, 14, 12) if real else (IMAGE_SIZE // 2, 8, 4)
    tokens_per_tile = (tile // patch) ** 2 // 4
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=[tile, tile],
            patch_size=[patch, patch],
            attention_bias=True,
            norm_type="layer_norm",
        ),
        text_config=dict(
            model_type="qwen2",  # Qwen2.5 in InternVL3; Qwen3 in InternVL3.5
            vocab_size=vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32768 if real else 4096,
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ),
        image_token_id=ids("<IMG_CONTEXT>"),
        image_seq_length=tokens_per_tile,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    model = InternVLForConditionalGeneration(config)
    image_processor = GotOcr2ImageProcessor(
        size={"height": tile, "width": tile},
        crop_to_patches=True,
        min_patches=1,
        max_patches=max_tiles,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    processor = InternVLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=InternVLVideoProcessor(size={"height": tile, "width": tile}),
        image_seq_length=tokens_per_tile,
        chat_template=real_chat_template("internvl"),  # short enough for both geometries
    )
    return model, processor


BUILDERS = {
    "qwen2_5_vl": _build_qwen,
    "gemma3": _build_gemma,
    "llava_next": _build_llava,
    "qwen3_vl": _build_qwen3_vl,
    "internvl": _build_internvl,
}


def build_tiny(name: str, out_dir: str | Path, seed: int = 0, vocab_size: int | None = None) -> Path:
    """Build tiny model ``name`` into ``out_dir`` (replaced atomically).

    ``vocab_size`` widens the embedding and LM head beyond the tokenizer (e.g. Gemma-3's
    262,144) to measure what a large vocabulary costs.
    """
    import torch
    from transformers import set_seed

    if name not in TINY_MODELS:
        raise KeyError(f"unknown tiny model {name!r}; choose from {', '.join(TINY_MODELS)}")
    spec = TINY_MODELS[name]
    if spec.paper and not torch.cuda.is_available():
        raise RuntimeError(
            f"{name} is {spec.real_counterpart} at full size, random-init: it is built on a GPU (in bf16); "
            "on a CPU use a tiny model"
        )
    out = Path(out_dir)
    tokenizer = train_tokenizer(spec.family)
    set_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        extra = {"width": spec.width} if spec.width != 1 else {}
        model, processor = BUILDERS[spec.family](
            tokenizer, seed, vocab_size or len(tokenizer), spec.geometry == "real", **extra
        )
        if spec.paper:
            with torch.device("cuda"):
                model = type(model)._from_config(
                    at_paper_widths(model.config, spec.paper), dtype=torch.bfloat16
                )
    model.generation_config.do_sample = False
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with publishing(out) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        (staging / "scale_tiny.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "family": spec.family,
                    "geometry": spec.geometry,
                    "seed": seed,
                    "real_counterpart": spec.real_counterpart,
                    "parameters": sum(p.numel() for p in model.parameters()),
                },
                indent=2,
            )
            + "\n"
        )
    return out
