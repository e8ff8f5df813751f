"""Explain one image: what OCR read, every candidate with its evidence and scores, and the choice.

This is what a person runs when a prediction looks wrong (``jobs/explain.py``, ``./submit.sh explain``):
the same steps as extract and predict on one image, in one process, without Spark or a feature store.
The image is a local file or a URL fetched under the configured safe-fetch rules (a private or loopback
address is refused before any connection unless ``fetch.allow_private`` / ``fetch.allow_loopback`` say
otherwise).

Explain is given its scorer (the job loads it through :mod:`imagequant.scoring.zoo`) and the second look's
question, and sees the scorer only through its contract (:class:`imagequant.scoring.base.Scorer`): how each
candidate was judged comes from :meth:`~imagequant.scoring.base.Scorer.judge`, so any kind of scorer is
explained the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from imagequant.config import Config
from imagequant.core.entities import ENTITY_SPECS, canonical_entity_name
from imagequant.core.geometry import segments_from_flat
from imagequant.core.tokens import OcrToken, ocr_text
from imagequant.core.units import format_prediction, format_value
from imagequant.errors import UsageError
from imagequant.scoring.base import CandidateScore, ConfidencePush, Prediction, Scorer, ScoringRow
from imagequant.text.candidates import Candidate, extract_candidates

if TYPE_CHECKING:
    from PIL import Image

    from imagequant.imaging import ImageError
    from imagequant.pipeline.images import NeedsSecondLook

# Boolean evidence of a Candidate shown by name when set; the rest of the evidence is shown as values.
_SHOWN_VALUES = ("rel_height", "conf", "recurrence", "rank", "line_index")


@dataclass
class CandidateView:
    """One candidate as explain shows it."""

    candidate: Candidate
    rule_score: float | None  # the rules' raw sum of evidence terms (None: the scorer does not report it)
    rule_confidence: float | None  # its monotone squash to 0..1 (the rules' score column)
    probability: float | None  # the scorer's own score of this mention (a model's probability; None with the rules)
    reasons: list[str] = dataclasses.field(default_factory=list)  # the evidence that speaks for it, as the scorer names it

    @classmethod
    def of(cls, candidate: Candidate, judged: CandidateScore) -> CandidateView:
        return cls(candidate, judged.rule_score, judged.rule_confidence, judged.score, list(judged.reasons))

    @property
    def rule_text(self) -> str:
        if self.rule_score is None or self.rule_confidence is None:
            return "rule -"
        return f"rule {self.rule_score:+.2f} (conf {self.rule_confidence:.3f})"

    @property
    def quantity(self) -> str:
        return f"{format_value(self.candidate.value)} {self.candidate.unit}"


@dataclass
class Explanation:
    source: str
    entity: str
    image_size: tuple[int, int]
    engine: str
    tokens: list[OcrToken]
    candidates: list[CandidateView]  # in reading order (rank)
    prediction: Prediction
    scorer: str
    threshold: float
    # what moved the confidence model's log-odds for this answer, largest push first (empty without one)
    drivers: list[ConfidencePush] = dataclasses.field(default_factory=list)

    def chosen(self) -> CandidateView | None:
        picked = self.prediction.candidate
        return next((v for v in self.candidates if v.candidate is picked), None)

    def text(self) -> str:
        """The report explain prints."""
        width, height = self.image_size
        lines = ocr_text(self.tokens).splitlines()
        out = [f"image: {self.source} ({width}x{height}); OCR engine {self.engine}: {len(self.tokens)} tokens "
               f"in {len(lines)} lines", "", "OCR lines:"]
        out += [f"  {text}" for text in lines] or ["  (no text read)"]
        with_model = any(v.probability is not None for v in self.candidates)
        out += ["", f"candidates for {self.entity}: {len(self.candidates)} (scorer {self.scorer})"]
        for i, view in enumerate(self.candidates):
            c = view.candidate
            model = f" p={view.probability:.3f}" if view.probability is not None else (" p=-" if with_model else "")
            mark = "*" if view is self.chosen() else " "
            out.append(f" {mark}{i + 1:>2}. {view.quantity:<22} text {c.text!r} box {box_text(c)} angle {c.angle} "
                       f"{view.rule_text}{model}")
            out.append(f"      evidence: {', '.join(evidence_flags(c)) or '(none)'}")
        out += ["", self.choice_line(), self.confidence_line()]
        return "\n".join(out) + "\n"

    def confidence_line(self) -> str:
        """The calibrated probability that the answer is right, and the evidence that moved it most."""
        p = self.prediction
        if p.confidence is None:
            return ("confidence: none (no candidate)" if p.candidate is None else
                    "confidence: none (the scorer has no confidence model: one comes from jobs/train.py, on enough "
                    "labeled rows both right and wrong)")
        up = [d.describe() for d in self.drivers if d.push > 0][:4]
        down = [d.describe() for d in self.drivers if d.push < 0][:4]
        return (f"confidence: {p.confidence:.3f} (calibrated probability that the answer is right); raised by: "
                f"{', '.join(up) or '(nothing)'}; lowered by: {', '.join(down) or '(nothing)'} (each evidence "
                f"term's push on the log-odds from an average training row's, this row's value in brackets)")

    def choice_line(self) -> str:
        p = self.prediction
        c = p.candidate
        if c is None:
            return f"choice: (empty) - no candidate for {self.entity}"
        where = f"read from {c.text!r} at {box_text(c)} (angle {c.angle})"
        chosen = self.chosen()
        why = ",".join(chosen.reasons if chosen is not None else []) or "(none)"
        if not p.prediction:
            best = format_prediction(c.value, c.unit, self.entity)
            return (f"choice: (empty) - the best, {best}, scored {p.score:.3f}, below the minimum score "
                    f"{self.threshold:.3f}; {where}; reasons: {why}")
        return f"choice: {p.prediction} (score {p.score:.3f}) {where}; reasons: {why}"


def box_text(c: Candidate) -> str:
    return f"({c.left},{c.top},{c.width},{c.height})"


def evidence_flags(c: Candidate) -> list[str]:
    """A candidate's evidence as short names: the flags that are set, then its position and size figures."""
    out: list[str] = []
    for f in dataclasses.fields(c):
        value = getattr(c, f.name)
        if f.type in ("bool", bool) and value and f.name != "unit_explicit":
            out.append(f.name)
    if not c.unit_explicit:
        out.append("unit_not_printed")
    if c.dim_letter:
        out.append(f"dim_letter={c.dim_letter}")
    if c.xgroup_pos >= 0:
        out.append(f"xgroup={c.xgroup_pos + 1}/{c.xgroup_len}")
    out += [f"{name}={_short(getattr(c, name))}" for name in _SHOWN_VALUES]
    return out


def _short(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


# --- the steps ---------------------------------------------------------------------------------------------


def is_url(source: str) -> bool:
    return "://" in source and bool(urlsplit(source).scheme)


def load_image_bytes(source: str, config: Config) -> bytes:
    """A local file's bytes, or the URL's through the safe fetcher. Refused, unreachable or missing images
    are UsageError (one ``error:`` line, exit 2)."""
    from imagequant.fetch import check_url, fetch_image

    if is_url(source):
        refused = check_url(source, config.fetch)  # decides before any connection is opened
        if refused is not None:
            raise UsageError(f"--image {source} is refused by the safe-fetch rules: {refused} (see fetch.allow_loopback, "
                             "fetch.allow_private and fetch.allowed_hosts)")
        fetched = fetch_image(source, config.fetch)
        if not fetched.ok or fetched.data is None:
            raise UsageError(f"--image {source} could not be fetched ({fetched.error_kind}): {fetched.message}")
        return fetched.data
    path = Path(source)
    if path.is_dir():
        raise UsageError(f"--image {source} is a folder, not an image file")
    if not path.is_file():
        raise UsageError(f"--image {source} does not exist (give an image file or an http(s) link)")
    size = path.stat().st_size
    if size > config.fetch.max_bytes:  # the same cap a download has
        raise UsageError(f"--image {source} has {size} bytes, over fetch.max_bytes ({config.fetch.max_bytes})")
    return path.read_bytes()


def decode(data: bytes, source: str, config: Config) -> Image.Image:
    from imagequant.imaging import ImageError, decode_image

    try:
        return decode_image(data, config.imaging.max_pixels)
    except ImageError as exc:
        raise unusable_image(source, exc) from None


def unusable_image(source: str, exc: ImageError) -> UsageError:
    """The image's own fault (undecodable, blank, too large to read), whether found decoding or reading it: the
    same one line as a bad argument, since explain has no other image to go on with."""
    return UsageError(f"--image {source} cannot be read as an image ({exc.kind}): {exc.message}")


def _cnn_features(image: Image.Image, config: Config) -> Any:
    """The image's CNN features as extract computes them (a trained model reads them); None when disabled."""
    if not config.cnn.enabled:
        return None
    import numpy as np

    from imagequant.imaging import prepare_for_cnn
    from imagequant.pipeline.images import embed_crops

    crop = prepare_for_cnn(image, config.imaging.cnn_size, config.imaging.max_pixels)
    features, _ = embed_crops(np.asarray(crop)[None], config)
    return features[0]


def asked_entity(text: str) -> str:
    """The table's name for the entity asked for, spelled as a catalog may spell it (``Item_Weight``); a
    UsageError when it names none."""
    entity = canonical_entity_name(text)
    if entity not in ENTITY_SPECS:
        raise UsageError(f"--entity {text!r} is not a known entity ({', '.join(ENTITY_SPECS)})")
    return entity


def explain_image(image: Image.Image, source: str, entity: str, config: Config, scorer: Scorer,
                  needs_second_look: NeedsSecondLook) -> Explanation:
    """OCR with the configured engine (its second look where ``needs_second_look`` says the entity lacks
    something), the entity's candidates, ``scorer``'s choice and how it judged each candidate, for one decoded
    image."""
    from imagequant.pipeline.images import read_image

    entity = asked_entity(entity)
    reading, flat_segments = read_image(image, config, [entity], needs_second_look=needs_second_look)
    tokens = reading.tokens
    size = (image.width, image.height)
    candidates = extract_candidates(tokens, entity, size, segments=segments_from_flat(flat_segments))
    cnn = _cnn_features(image, config) if scorer.reads_cnn else None
    row = ScoringRow(entity, tokens, size, candidates, cnn)
    threshold = config.predict.min_score
    [prediction] = scorer.predict([row], threshold=threshold)
    judged = scorer.judge(row, prediction)
    views = [CandidateView.of(c, j) for c, j in zip(candidates, judged.candidates, strict=True)]
    return Explanation(source, entity, size, config.ocr.engine, tokens, views, prediction, scorer.name,
                       scorer.threshold if threshold is None else threshold, judged.drivers)


def annotated_name(source: str, entity: str) -> str:
    """The PNG's file name: the image's readable name and the entity."""
    from imagequant.fetch import image_file_name

    stem = Path(image_file_name(source) if is_url(source) else Path(source).name).stem or "image"
    return f"{stem}.{entity}.explain.png"


def annotate(image: Image.Image, explanation: Explanation, path: str | Path) -> Path:
    """A PNG of the image with every candidate's box numbered as in the printed list, the choice in green
    (amber when it scored below the minimum score), the others in grey-blue."""
    from PIL import ImageDraw, ImageFont

    picture = image.convert("RGB")
    draw = ImageDraw.Draw(picture)
    line = max(2, round(max(picture.size) / 400))
    font = ImageFont.load_default(size=max(12, round(max(picture.size) / 50)))
    chosen = explanation.chosen()
    # the choice last, so its box is drawn over any overlapping ones
    order = sorted(range(len(explanation.candidates)), key=lambda i: explanation.candidates[i] is chosen)
    for i in order:
        view = explanation.candidates[i]
        c = view.candidate
        if view is chosen:
            colour = "#1a9850" if explanation.prediction.prediction else "#f0a000"
        else:
            colour = "#4a7ab0"
        box = (c.left - line, c.top - line, c.left + c.width + line, c.top + c.height + line)
        draw.rectangle(box, outline=colour, width=line * (2 if view is chosen else 1))
        label = f"{i + 1}" + (f" {explanation.prediction.prediction or 'held back'}" if view is chosen else "")
        at = (box[0], max(0, box[1] - font.size - 2 * line))
        draw.rectangle(draw.textbbox(at, label, font=font), fill="white")
        draw.text(at, label, fill=colour, font=font)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    picture.save(target, format="PNG")
    return target


def run_explain(source: str, entity: str, config: Config, scorer: Scorer, needs_second_look: NeedsSecondLook,
                out_dir: str | Path | None = None) -> tuple[Explanation, Path | None]:
    """The whole of explain: load, decode, explain with ``scorer``, and with ``out_dir`` the annotated PNG."""
    entity = asked_entity(entity)
    image = decode(load_image_bytes(source, config), source, config)
    explanation = explain_image(image, source, entity, config, scorer, needs_second_look)
    written = annotate(image, explanation, Path(out_dir) / annotated_name(source, entity)) if out_dir else None
    return explanation, written
