"""The Segmind request models: one per endpoint, field for field as on Segmind's model pages.

These models are the single source of parameter names, ranges, defaults and descriptions, for
validation and for the OpenAPI document (/docs). The input layer is lenient the way Segmind's
is (segmind-api.md §6 "Parameter coercion"): numeric strings become numbers, "true"/"false"
become booleans, ``jpg`` means ``jpeg`` and unknown fields are ignored.
"""
from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

SEED_MAX = 2**63 - 1  # segmindapi sends seeds above 2**32 (segmind-api.md §5)


@dataclass(frozen=True)
class Media:
    """Marks a field whose value is an image or audio reference (URL, base64 or data URI)."""

    kind: Literal["image", "audio"]


def _lower_jpg_is_jpeg(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().lower()
        return "jpeg" if value == "jpg" else value
    return value


def _int_from_string(value: Any) -> Any:
    # Literal[256, 512] is not coerced by pydantic, but the seed snippet sends "256".
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


ImageFormat = Annotated[Literal["png", "jpeg", "webp"], BeforeValidator(_lower_jpg_is_jpeg)]
def _empty_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


ImageRef = Annotated[str, Media("image")]
OptionalImageRef = Annotated[str | None, Media("image"), BeforeValidator(_empty_is_none)]
AudioRef = Annotated[str, Media("audio")]


def _media_field(description: str, required: bool, example: str | None = None) -> Any:
    extra: dict[str, Any] = {"format": "uri"}
    if example:
        extra["examples"] = [example]
    return Field(... if required else None, description=description, json_schema_extra=extra)


class SegmindRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    # Seed values that mean "draw one at random", besides an omitted seed.
    RANDOM_SEEDS: ClassVar[tuple[int, ...]] = ()

    # facefoundry extra (issue 12, "v2 extras"): called when a v2 job completes or fails.
    webhook: str | None = Field(
        None, description="facefoundry extra, v2 only: URL that receives a signed POST of the result when the job "
        "completes or fails (X-Facefoundry-Signature: t=<unix>,v1=<HMAC-SHA256 of '<t>.<body>'>)",
        json_schema_extra={"format": "uri"},
    )

    def chosen_seed(self) -> int:
        """The seed the pipeline runs with; drawn like the originals, in [0, 2**32-1], when not given."""
        seed = getattr(self, "seed", None)
        if seed is None or seed in self.RANDOM_SEEDS:
            return secrets.randbelow(2**32)
        return seed


class ExpressionEditorRequest(SegmindRequest):
    image: ImageRef = _media_field(
        "URL of the Input Face Image", True,
        "https://segmind-sd-models.s3.amazonaws.com/display_images/ep-editor-ip.png",
    )
    ref_expression_image: OptionalImageRef = _media_field("URL of the reference expression image", False)
    aaa: float = Field(0, ge=-30, le=30, description="Mouth shape for 'aaa'")
    eee: float = Field(0, ge=-15, le=15, description="Mouth shape for 'eee'")
    woo: float = Field(0, ge=-15, le=15, description="Mouth shape for 'woo'")
    smile: float = Field(0, ge=-0.3, le=1.3, description="Smile intensity")
    wink: float = Field(0, ge=0, le=25, description="Wink intensity")
    blink: float = Field(0, ge=-20, le=5, description="Blink intensity")
    eyebrow: float = Field(0, ge=-10, le=10, description="Eyebrow position adjustment")
    pupil_x: float = Field(0, ge=-15, le=15, description="Pupil X-axis position")
    pupil_y: float = Field(0, ge=-15, le=15, description="Pupil Y-axis position")
    rotate_pitch: float = Field(0, ge=-20, le=20, description="Pitch rotation in degrees")
    rotate_yaw: float = Field(0, ge=-20, le=20, description="Yaw rotation in degrees")
    rotate_roll: float = Field(0, ge=-20, le=20, description="Roll rotation in degrees")
    sample_parts: Literal["OnlyExpression", "OnlyRotation", "OnlyMouth", "OnlyEyes", "All"] = Field(
        "OnlyExpression", description="Part of the face to sample"
    )
    image_format: ImageFormat = Field("png", description="Output image format (jpg is an alias of jpeg)")
    image_quality: int = Field(95, ge=10, le=100, description="Image quality")
    # facefoundry extras: base64 as on the other image endpoints, and (issue #5) the edited
    # 512x512 face crop instead of the pasted-back photo.
    base64: bool = Field(False, description="facefoundry extra: return {\"image\": <base64>} instead of bytes")
    output: Literal["full", "crop"] = Field(
        "full", description="facefoundry extra: 'full' pastes the edited face back; 'crop' returns the 512x512 face"
    )


class FaceToStickerRequest(SegmindRequest):
    image: ImageRef = _media_field(
        "An image of a person to be converted to a sticker", True,
        "https://segmind-sd-models.s3.amazonaws.com/display_images/face-to-sticker-input.jpg",
    )
    prompt: str = Field("a person", description="What the sticker shows")
    negative_prompt: str = Field("", description="Things you do not want in the image")
    # Segmind's page gives no ranges for steps/width/height; these bounds are ours, to keep one
    # request from occupying the GPU for minutes.
    steps: int = Field(20, ge=1, le=100, description="Denoising steps (facefoundry bound: 1-100)")
    width: int = Field(1024, ge=256, le=2048, description="Output width in pixels (facefoundry bound: 256-2048)")
    height: int = Field(1024, ge=256, le=2048, description="Output height in pixels (facefoundry bound: 256-2048)")
    seed: int | None = Field(
        None, ge=0, le=SEED_MAX, description="Fix the random seed for reproducibility; random when omitted"
    )
    upscale: bool = Field(False, description="2x upscale the sticker")
    upscale_steps: int = Field(10, ge=1, le=100, description="Number of steps to upscale")
    prompt_strength: float = Field(
        7, ge=0, le=30,
        description="Strength of the prompt. This is the CFG scale, higher numbers lead to stronger "
        "prompt, lower numbers will keep more of a likeness to the original. (facefoundry bound: 0-30)",
    )
    ip_adapter_noise: float = Field(0.5, ge=0, le=1, description="How much noise is added to the IP adapter input")
    ip_adapter_weight: float = Field(0.2, ge=0, le=1, description="How much the IP adapter will influence the image")
    instant_id_strength: float = Field(1, ge=0, le=1, description="How strong the InstantID will be.")
    # facefoundry extra (sticker-and-character.md decision): the sticker is RGBA; png and webp keep
    # the alpha channel, jpeg is flattened on white. Segmind's page returns a png.
    image_format: ImageFormat = Field(
        "png", description="facefoundry extra: output format; png/webp keep transparency, jpeg is flattened on white"
    )


class FaceSwapRequest(SegmindRequest):
    source_image: ImageRef = _media_field(
        "The image URL of the source image", True,
        "https://segmind-resources.s3.amazonaws.com/input/b872c581-a20a-4fda-98aa-b78d2e221ccb-v4-source-img.jpg",
    )
    target_image: ImageRef = _media_field(
        "The image on which the face swap will be applied, url", True,
        "https://segmind-resources.s3.amazonaws.com/output/7401f2ea-5652-4f2a-93d9-a587f1ccb62f-fs-v4-target.png",
    )
    model_type: Literal["speed", "quality"] = Field(
        "speed", description="The inference steps to use for face swapping. Speed = 8 steps, quality = 30 steps"
    )
    swap_type: Literal["head", "face"] = Field(
        "head", description="Determines whether to swap the entire head or just the face"
    )
    style_type: Literal["normal", "style"] = Field(
        "normal",
        description="The style to apply during face swapping. normal: source style, style: match style of target image",
    )
    seed: int = Field(42, ge=0, le=SEED_MAX, description="Random seed for reproducibility")
    image_format: ImageFormat = Field("png", description="The output image format (jpg is an alias of jpeg)")
    image_quality: int = Field(90, ge=10, le=100, description="The quality of the output image")
    hardware: Literal["fast", "cost"] = Field(
        "fast", description="The hardware to use. Does not affect quality, only latency and cost (accepted, no effect)"
    )
    base64: bool = Field(False, description="Output as base64")


class ConsistentCharacterRequest(SegmindRequest):
    RANDOM_SEEDS: ClassVar[tuple[int, ...]] = (0, -1)

    subject: ImageRef = _media_field(
        "An image of a person. Best images are square close ups of a face, but they do not have to be.", True,
        "https://segmind-sd-models.s3.amazonaws.com/display_images/consistant-character-ip.png",
    )
    prompt: str = Field(
        "a photo of a man at a beach, wearing hawaiian shirt, looking directly at the camera",
        description="Describe the subject. Include clothes and hairstyle for more consistency.",
    )
    negative_prompt: str = Field("low quality,blur", description="Things you do not want to see in your image")
    # The original treats 0 and -1 like an omitted seed (sticker-and-character.md "Seed and outputs"),
    # hence RANDOM_SEEDS above.
    seed: int | None = Field(
        None, ge=-1, le=SEED_MAX, description="Set a seed for reproducibility. Random by default (also for 0 and -1)."
    )
    output_format: ImageFormat = Field("webp", description="Output image format (jpg is an alias of jpeg)")
    output_quality: int = Field(
        80, ge=0, le=100,
        description="Quality of the output images, from 0 to 100. 100 is best quality, 0 is lowest quality.",
    )
    randomise_poses: bool = Field(True, description="Randomise the poses used.")
    number_of_outputs: int = Field(1, ge=1, le=20, description="The number of images to generate.")
    number_of_images_per_pose: int = Field(
        1, ge=1, le=4, description="The number of images to generate for each pose."
    )


class SadTalkerRequest(SegmindRequest):
    input_image: ImageRef = _media_field(
        "Input image of a talking-head.", True,
        "https://segmind-sd-models.s3.amazonaws.com/display_images/sad_talker/sad-talker-input.png",
    )
    input_audio: AudioRef = _media_field(
        "Input audio file (mp3, wav, m4a, ogg or flac).", True,
        "https://segmind-sd-models.s3.amazonaws.com/display_images/sad_talker/sad_talker_audio_input.mp3",
    )
    pose_style: int = Field(4, ge=0, le=45, description="Pose Style")
    expression_scale: float = Field(
        1.4, ge=1, le=3, description="A larger value will make the expression motion stronger"
    )
    preprocess: Literal["crop", "extcrop", "resize", "full", "extfull"] = Field(
        "full", description="Method to preprocess the image"
    )
    image_size: Annotated[Literal[256, 512], BeforeValidator(_int_from_string)] = Field(
        256, description="The image size of the facerender"
    )
    enhancer: bool = Field(True, description="Enhance the output video")
    base64: bool = Field(False, description="Base64 encoding of the output video.")
    # facefoundry extras (sadtalker.md, Decisions): reproducible draws and SadTalker's --still.
    seed: int | None = Field(
        None, ge=0, le=SEED_MAX, description="facefoundry extra: seed of every random draw; random when omitted"
    )
    still: bool | None = Field(
        None, description="facefoundry extra: keep the source head pose; default true for full/extfull, else false"
    )

    @model_validator(mode="after")
    def _still_by_preprocess(self) -> "SadTalkerRequest":
        # sadtalker.md, Decisions: still by default for the full-frame modes only.
        if self.still is None:
            self.still = self.preprocess in ("full", "extfull")
        return self


@dataclass(frozen=True)
class Endpoint:
    """What the server needs to know about one Segmind endpoint besides its request model."""

    slug: str
    title: str
    request: type[SegmindRequest]
    output: Literal["image", "video"]
    format_field: str | None = None
    quality_field: str | None = None

    @property
    def media_fields(self) -> dict[str, Media]:
        return {
            name: meta
            for name, info in self.request.model_fields.items()
            for meta in info.metadata
            if isinstance(meta, Media)
        }

    def output_format(self, request: SegmindRequest) -> str:
        if self.output == "video":
            return "mp4"
        return getattr(request, self.format_field) if self.format_field else "png"

    def output_quality(self, request: SegmindRequest) -> int:
        return getattr(request, self.quality_field) if self.quality_field else 95

    def wants_base64(self, request: SegmindRequest) -> bool:
        return bool(getattr(request, "base64", False))


ENDPOINTS: dict[str, Endpoint] = {
    e.slug: e
    for e in (
        Endpoint("expression-editor", "Expression Editor", ExpressionEditorRequest, "image",
                 "image_format", "image_quality"),
        Endpoint("face-to-sticker", "Face to Sticker", FaceToStickerRequest, "image", "image_format"),
        Endpoint("faceswap-v4", "Faceswap v4", FaceSwapRequest, "image", "image_format", "image_quality"),
        Endpoint("consistent-character", "Consistent Character", ConsistentCharacterRequest, "image",
                 "output_format", "output_quality"),
        Endpoint("sadtalker", "SadTalker", SadTalkerRequest, "video"),
    )
}


def _article(json_type: str) -> str:
    return f"an {json_type}" if json_type[0] in "aeiou" else f"a {json_type}"


def allowed_values(model: type[BaseModel], field: str) -> str:
    """A field's allowed values in words, for 400 messages ("between -30 and 30", "one of …")."""
    schema = model.model_json_schema()["properties"].get(field, {})
    variants = schema.get("anyOf", [schema])
    for variant in variants:
        if "enum" in variant:
            return "one of " + ", ".join(str(v) for v in variant["enum"])
        if "const" in variant:
            return f"{variant['const']}"
        low, high = variant.get("minimum"), variant.get("maximum")
        if low is not None and high is not None:
            return f"{_article(variant.get('type', 'number'))} between {low} and {high}"
        if variant.get("type") not in (None, "null"):
            return _article(variant["type"])
    return "a valid value"


def describe_validation_error(model: type[BaseModel], error: ValidationError) -> str:
    """One line naming every bad field and what it accepts (segmind-api.md §3: 400, ``{"error"}``)."""
    parts = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "body"
        if item["type"] == "missing":
            parts.append(f"{field} is required")
            continue
        got = item.get("input")
        shown = repr(got) if not isinstance(got, str) or len(got) < 40 else repr(got[:37] + "...")
        parts.append(f"{field} must be {allowed_values(model, field)} (got {shown})")
    return "; ".join(dict.fromkeys(parts))


def pipeline_params(params_type: type, request: SegmindRequest):
    """The pipeline's ``Params`` from a validated request: the same field names, so every value
    (and every default) is the protocol's (issue 12, "The boundary")."""
    return params_type(**{f.name: getattr(request, f.name) for f in dataclasses.fields(params_type)})


def params_for(slug: str, params_type: type, **fields: Any):
    """``params_type`` from request fields alone, every other field at the protocol's default (media
    fields get a dummy reference, "-"): how benchmarks and pipeline tests build parameters."""
    endpoint = ENDPOINTS[slug]
    dummy_media = {name: "-" for name in endpoint.media_fields}
    return pipeline_params(params_type, endpoint.request.model_validate({**dummy_media, **fields}))
