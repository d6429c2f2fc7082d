"""Objectives are data: a registered, validated, hashable description of a training loss.

An objective says what a training step minimises. It is a small frozen dataclass with

- ``name``: its key in the registry (``"ce"``, ``"hns"``), the name ``make_objective`` takes;
- ``arm``: the short name a comparison table uses for it (``"CE"``, ``"HNS"``);
- ``label``: a unique, readable description for charts (``"HNS(layout=2)"``);
- ``canonical()``: the values that enter the run id (``engine.runs.config_hash``);
- ``loss(logits, targets, context)``: the per-position values the step averages.

Two optional capabilities, for the peers and ablations that need them:

- ``split_head``: the objective gives the hidden states and the output rows different
  gradients. It defines ``split_loss(z_hidden, z_rows, targets, context)`` instead of
  ``loss``; both arguments hold the same logits, ``z_hidden`` with the rows detached and
  ``z_rows`` with the hidden states detached (``scenarios.forward``). ``rows_only``
  builds a term whose value is 0 and whose gradient is that of its argument.
- ``initial_state(vocab_size, device)``: tensors the objective carries from step to step
  (AGG's token counts), kept in ``LossContext.state`` and in the run's checkpoints.

Evaluation never goes through the objective: every run is scored with the plain
softmax of its logits, so any two objectives are compared on the same numbers.
A new objective is one class with ``@register``; the run store, the profiles and
the chapters take it without a change elsewhere.

Every hyperparameter has a range a run can honour, checked where the objective is
made (``_in_range``): NaN, infinities, huge integers and values outside it are refused
with an error that names the hyperparameter. An objective that a comparison tunes says
how in ``tuning`` (a ``Tuning``: its candidate values, the published one, and the grid's
geometry, from which ``study.field`` extends a grid whose choice lands on its edge).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from entmax import entmax_bisect

from .losses import check_logits_and_targets, entmax15_loss, hns_cross_entropy
from .validation import ParameterError, check_choice, check_ranged

LAYOUT_SCHEDULES = ("constant", "linear", "cosine")
REGISTRY: dict[str, type[Objective]] = {}
TUNING_SIDES = ("below", "above")


@dataclass(frozen=True)
class Tuning:
    """The one hyperparameter a comparison tunes, and how.

    ``values`` are the candidates tried first (increasing), ``published`` the value its
    paper uses (one of them; ties in tuning go to it). The grid is geometric about
    ``origin``: its values' offsets from ``origin`` grow by a factor from one to the
    next (roughly: 1, 3, 10, 30, 100). ``beyond`` continues it one step past either
    end, by the factor of the two values at that end, so that a choice on the edge of
    the grid can be checked against the next value out (``study.field``).
    """

    hyperparameter: str
    values: tuple[float, ...]
    published: float
    origin: float = 0.0

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in self.values)
        if len(values) < 2 or any(b <= a for a, b in zip(values, values[1:], strict=False)):
            raise ParameterError("tuning values", self.values, "two or more increasing values")
        if values[0] <= self.origin:
            raise ParameterError("tuning values", self.values, f"values above {self.origin:g}")
        if float(self.published) not in values:
            raise ParameterError("published", self.published, f"one of {values}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "published", float(self.published))
        object.__setattr__(self, "origin", float(self.origin))

    def beyond(self, values: tuple[float, ...], side: str) -> float:
        """The value one step past the ``side`` end ('below' or 'above') of ``values``
        (a grid of this hyperparameter, increasing, at least two values): the offset
        from ``origin`` of the end value divided (below) or multiplied (above) by the
        ratio of the two offsets at that end, rounded to three significant digits."""
        check_choice("side", side, TUNING_SIDES)
        ordered = sorted(float(v) for v in values)
        if len(ordered) < 2:
            raise ParameterError("values", values, "a grid of two or more values")
        offsets = [v - self.origin for v in ordered]
        if side == "below":
            step = offsets[1] / offsets[0]
            offset = offsets[0] / step
        else:
            step = offsets[-1] / offsets[-2]
            offset = offsets[-1] * step
        return self.origin + float(f"{offset:.3g}")


@dataclass(frozen=True)
class LossContext:
    """What a loss may need besides the logits: where training is, and the model."""

    step: int = 0  # 0-based index of the step being taken
    max_steps: int = 1
    model: Any = None  # the model being trained (for objectives that regularise its weights)
    # log of the training stream's smoothed unigram distribution over the model's tokens
    # (``Corpus.log_prior``), for objectives that correct for frequency
    log_prior: torch.Tensor | None = None
    # what a stateful objective carries between steps (``Objective.initial_state``)
    state: dict | None = None


@dataclass(frozen=True)
class Objective:
    """Base of every objective: subclasses set ``name`` and ``arm`` and define ``loss``."""

    name: ClassVar[str] = ""
    arm: ClassVar[str] = ""
    # True when ``loss`` at each position reads that position's logits and target only,
    # and of the context only what every run of one shape shares (step, max_steps,
    # log_prior): an ensemble then computes it for all its members with this objective
    # in one call (``engine.ensemble.member_losses``). False is always safe.
    positionwise: ClassVar[bool] = False
    # True when the objective defines ``split_loss`` (see the module's docstring)
    split_head: ClassVar[bool] = False
    # What a comparison of objectives (``study.field``) makes of it: 'reference' (CE),
    # 'hns', 'peer' (a published remedy) or 'ablation' (a part of HNS alone)
    role: ClassVar[str] = "peer"
    # The one hyperparameter a comparison tunes, its candidates and its published value
    # (``Tuning``), or None for an objective with nothing to tune
    tuning: ClassVar[Tuning | None] = None
    # The metric the objective was built to optimise when it is not the comparison's
    # (logit adjustment: balanced recall, the mean over classes of per-class top-1); a
    # comparison also tunes it on that metric and reports it beside the common choice
    own_target: ClassVar[str | None] = None

    @property
    def label(self) -> str:
        """A unique readable name: the arm and its hyperparameters."""
        params = ", ".join(f"{k}={_short(v)}" for k, v in self.params().items())
        return f"{self.arm}({params})" if params else self.arm

    def params(self) -> dict[str, Any]:
        """The hyperparameters, by field name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def canonical(self) -> dict[str, Any]:
        """The values that identify this objective in a run id."""
        return {"objective": {"name": self.name, **_json_values(self.params())}}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (inf written as 'inf'); ``objective_from_dict`` inverts it."""
        return {"name": self.name, **_json_values(self.params())}

    def loss(
        self, logits: torch.Tensor, targets: torch.Tensor, context: LossContext
    ) -> torch.Tensor:
        """Per-position loss values, shaped like ``targets``."""
        raise NotImplementedError

    def split_loss(
        self,
        z_hidden: torch.Tensor,
        z_rows: torch.Tensor,
        targets: torch.Tensor,
        context: LossContext,
    ) -> torch.Tensor:
        """Per-position values for a ``split_head`` objective: the logits twice, their
        gradient reaching the hidden states only (``z_hidden``) or the rows only."""
        raise NotImplementedError(f"{type(self).__name__} does not split the head")

    def initial_state(self, vocab_size: int, device: torch.device) -> dict | None:
        """The tensors a stateful objective starts a run with (None: it keeps none)."""
        return None


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: make ``cls`` available by its ``name`` (once)."""
    if not cls.name or not cls.arm:
        raise ValueError(f"objective class {cls.__name__} needs a name and an arm")
    known = REGISTRY.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"objective name {cls.name!r} is taken by {known.__name__}")
    REGISTRY[cls.name] = cls
    return cls


def make_objective(name: str, **params: Any) -> Objective:
    """The registered objective ``name`` with ``params`` (validated by the class)."""
    cls = REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        check_choice("objective", name, sorted(REGISTRY))
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        allowed = "hyperparameters among " + (", ".join(sorted(fields)) or "(none)")
        raise ParameterError(f"{name} objective", unknown[0], allowed)
    return cls(**{k: (math.inf if v == "inf" else v) for k, v in params.items()})


def objective_from_dict(data: dict[str, Any]) -> Objective:
    """Inverse of ``Objective.to_dict``."""
    if not isinstance(data, dict) or "name" not in data:
        raise ParameterError("objective", data, "a mapping with a 'name' key")
    params = dict(data)
    return make_objective(params.pop("name"), **params)


@register
@dataclass(frozen=True)
class CrossEntropy(Objective):
    """Plain cross-entropy over the whole vocabulary."""

    name: ClassVar[str] = "ce"
    arm: ClassVar[str] = "CE"
    role: ClassVar[str] = "reference"
    positionwise: ClassVar[bool] = True

    def canonical(self) -> dict[str, Any]:
        # Runs trained before objectives were objects left every objective field at its
        # default for CE, so CE contributes nothing and those run ids are unchanged.
        return {}

    def loss(self, logits, targets, context):
        return hns_cross_entropy(logits, targets, math.inf, reduction="none")


@register
@dataclass(frozen=True)
class HardNegatives(Objective):
    """HNS: cross-entropy over the hard negatives only (logits >= target - layout).

    ``schedule`` 'linear' or 'cosine' moves the layout from ``layout`` at the first step
    to ``layout_end`` at the last (both finite); 'constant' keeps ``layout`` (and
    ``layout_end`` stays inf). The layout is finite: an infinite one is plain
    cross-entropy, which is ``CrossEntropy`` (one experiment, one run id).
    """

    layout: float = 2.0
    schedule: str = "constant"
    layout_end: float = math.inf

    name: ClassVar[str] = "hns"
    arm: ClassVar[str] = "HNS"
    role: ClassVar[str] = "hns"
    positionwise: ClassVar[bool] = True
    tuning: ClassVar = Tuning("layout", (1.0, 2.0, 4.0), published=2.0)

    def __post_init__(self) -> None:
        check_choice("layout_schedule", self.schedule, LAYOUT_SCHEDULES)
        for field in ("layout", "layout_end"):
            _float_sized(field, getattr(self, field), "a real number >= 0")
        if self.schedule == "constant":
            object.__setattr__(self, "layout", check_ranged("layout", self.layout))
            if not (_is_number(self.layout_end) and math.isinf(self.layout_end)):
                allowed = "inf unless layout_schedule is 'linear' or 'cosine'"
                raise ParameterError("layout_end", self.layout_end, allowed)
            object.__setattr__(self, "layout_end", math.inf)
        else:  # a schedule interpolates: both ends finite
            for field in ("layout", "layout_end"):
                object.__setattr__(self, field, check_ranged(field, getattr(self, field)))

    @property
    def label(self) -> str:
        if self.schedule != "constant":
            return f"HNS(layout={self.layout:g}→{self.layout_end:g}, {self.schedule})"
        return f"HNS(layout={self.layout:g})"

    def canonical(self) -> dict[str, Any]:
        # The field names runs were hashed with before objectives were objects: the
        # constant HNS and the scheduled runs keep their ids.
        out: dict[str, Any] = {"layout": self.layout}
        if self.schedule != "constant":
            out.update(layout_schedule=self.schedule, layout_end=self.layout_end)
        return _json_values(out)

    def layout_at(self, step: int, max_steps: int) -> float:
        """The layout at 0-based ``step``: constant, or interpolated from ``layout`` at
        step 0 to ``layout_end`` at the last step (linearly, or along half a cosine)."""
        if self.schedule == "constant":
            return self.layout
        t = min(1.0, step / max(1, max_steps - 1))
        if self.schedule == "cosine":
            t = 0.5 * (1.0 - math.cos(math.pi * t))
        return self.layout + (self.layout_end - self.layout) * t

    def loss(self, logits, targets, context):
        layout = self.layout_at(context.step, context.max_steps)
        return hns_cross_entropy(logits, targets, layout, reduction="none")


@register
@dataclass(frozen=True)
class Focal(Objective):
    """Focal loss (Lin et al., 2017): -(1 - p_t)^gamma log p_t. It down-weights the
    positions the model already gets right, whatever the target's frequency: a control
    that reweights by difficulty, not by rarity. ``gamma = 0`` is cross-entropy."""

    gamma: float = 2.0

    name: ClassVar[str] = "focal"
    arm: ClassVar[str] = "Focal"
    positionwise: ClassVar[bool] = True
    tuning: ClassVar = Tuning("gamma", (0.5, 1.0, 2.0, 5.0), published=2.0)
    # beyond 20 the weight (1 - p)^gamma of a position the model gets half right is
    # below 1e-6: nothing is left to train on
    GAMMA_MAX: ClassVar[float] = 20.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "gamma", _in_range("gamma", self.gamma, 0.0, self.GAMMA_MAX))

    def loss(self, logits, targets, context):
        ce = hns_cross_entropy(logits, targets, math.inf, reduction="none")
        p_target = torch.exp(-ce)
        return (1.0 - p_target).pow(self.gamma) * ce


@register
@dataclass(frozen=True)
class CosineRegularised(Objective):
    """Cross-entropy plus ``gamma`` times the mean cosine similarity over all pairs of
    distinct embedding rows (Gao et al., ICLR 2019, "Representation Degeneration"): a
    penalty on the rows crowding into one direction. The penalty is added to every
    position, so the batch mean is CE's mean plus ``gamma`` times the penalty."""

    gamma: float = 1.0

    name: ClassVar[str] = "cosine-reg"
    arm: ClassVar[str] = "CosReg"
    tuning: ClassVar = Tuning("gamma", (1.0, 3.0, 10.0, 30.0, 100.0), published=1.0)
    # the penalty lies in [-1/(V-1), 1]: a weight of 1000 lets it outweigh any
    # cross-entropy a run reaches, and the grid's extension stays below it
    GAMMA_MAX: ClassVar[float] = 1000.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "gamma", _in_range("gamma", self.gamma, 0.0, self.GAMMA_MAX))

    def loss(self, logits, targets, context):
        if context.model is None:
            raise ValueError("the cosine regulariser needs LossContext.model (its embedding)")
        ce = hns_cross_entropy(logits, targets, math.inf, reduction="none")
        return ce + self.gamma * mean_pairwise_cosine(context.model.embedding)


def mean_pairwise_cosine(weight: torch.Tensor) -> torch.Tensor:
    """Mean of cos(w_i, w_j) over the ordered pairs i != j of the rows of ``weight`` (V, d).
    With unit rows u_i: (|sum_i u_i|^2 - V) / (V (V - 1)), no V x V matrix needed."""
    V = weight.size(0)
    if V < 2:
        return weight.sum() * 0.0
    unit = F.normalize(weight, dim=1)
    total = unit.sum(dim=0)
    return (total.dot(total) - (unit * unit).sum()) / (V * (V - 1))


@register
@dataclass(frozen=True)
class LogitAdjusted(Objective):
    """Logit adjustment (Menon et al., ICLR 2021): train on CE(z + tau * log pi), with pi
    the training stream's smoothed unigram distribution (``LossContext.log_prior``);
    evaluation uses z. Frequent tokens get a head start in training, so the model must
    lift rare ones by itself. ``tau = 0`` is cross-entropy."""

    tau: float = 1.0

    name: ClassVar[str] = "logit-adjust"
    arm: ClassVar[str] = "LA"
    positionwise: ClassVar[bool] = True
    # it minimises balanced error; under the natural prior top-1's optimum is tau = 0 (CE)
    own_target: ClassVar = "balanced_recall"
    tuning: ClassVar = Tuning("tau", (0.05, 0.1, 0.25, 0.5, 1.0), published=1.0)
    # ten times the published value (Menon et al.: tau = 1)
    TAU_MAX: ClassVar[float] = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tau", _in_range("tau", self.tau, 0.0, self.TAU_MAX))

    def loss(self, logits, targets, context):
        if context.log_prior is None:
            raise ValueError("logit adjustment needs LossContext.log_prior (Corpus.log_prior)")
        if self.tau == 0.0:
            return hns_cross_entropy(logits, targets, math.inf, reduction="none")
        adjusted = logits + self.tau * context.log_prior.to(logits.dtype)
        return hns_cross_entropy(adjusted, targets, math.inf, reduction="none")


@register
@dataclass(frozen=True)
class Entmax15(Objective):
    """The alpha-entmax loss (Peters et al., 2019), 1.5-entmax by default: the principled
    sparse alternative to HNS's hard cut. Its gradient p* - e_y is exactly 0 on the
    tokens alpha-entmax gives no probability, a support it chooses itself; alpha -> 1
    is softmax (no sparsity), 2 is sparsemax. A run is still evaluated with the
    softmax of its logits: its ranking metrics compare with the other objectives', its
    softmax loss does not measure what it was trained for.

    At alpha 1.5 the distribution is computed exactly by sorting (``losses.entmax15``;
    the runs of earlier versions keep their ids); at any other alpha by bisection, the
    ``entmax`` package's ``entmax_bisect`` (``ENTMAX_BISECTIONS`` halvings of the
    threshold's bracket, far below float32's resolution). The loss is the Fenchel-Young
    loss of the Tsallis entropy, (1 - sum p^alpha) / (alpha (alpha - 1)) + (p - e_y) . z.
    The registry keeps the name 'entmax15' for every alpha: it names the stored runs.
    """

    alpha: float = 1.5

    name: ClassVar[str] = "entmax15"
    arm: ClassVar[str] = "Entmax"
    positionwise: ClassVar[bool] = True
    # the grid is geometric in alpha - 1: 0.25, 0.5, 1
    tuning: ClassVar = Tuning("alpha", (1.25, 1.5, 2.0), published=1.5, origin=1.0)
    # alpha near 1 is softmax, cross-entropy itself (an arm of its own); the range holds
    # the grid and every value its extension reaches (1.0625 to 5)
    ALPHA_RANGE: ClassVar[tuple[float, float]] = (1.05, 10.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", _in_range("alpha", self.alpha, *self.ALPHA_RANGE))

    def canonical(self) -> dict[str, Any]:
        # 1.5-entmax runs were hashed before alpha was a hyperparameter: they keep their ids
        if self.alpha == 1.5:
            return {"objective": {"name": self.name}}
        return super().canonical()

    def loss(self, logits, targets, context):
        if self.alpha == 1.5:
            return entmax15_loss(logits, targets)
        return entmax_bisect_loss(logits, targets, self.alpha)


ENTMAX_BISECTIONS = 50  # the entmax package's default


def entmax_bisect_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-position alpha-entmax loss, p = entmax_bisect(z, alpha): (1 - sum p^alpha) /
    (alpha (alpha - 1)) + (p - e_y) . z, with gradient p - e_y in z (p held fixed, as in
    ``losses.entmax15_loss``). ``logits`` (..., V), ``targets`` (...)."""
    V = logits.size(-1)
    z = logits.reshape(-1, V)
    y = targets.reshape(-1)
    check_logits_and_targets(z, y, ignore_index=-1)
    with torch.no_grad():
        wide = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
        p = entmax_bisect(wide.detach(), alpha=alpha, dim=-1, n_iter=ENTMAX_BISECTIONS)
        p = p.to(z.dtype)
        omega = (1 - p.pow(alpha).sum(dim=1)) / (alpha * (alpha - 1))
        p_minus_e = p.scatter_add(1, y.unsqueeze(1), torch.full_like(p[:, :1], -1.0))
    loss = omega + (p_minus_e * z).sum(dim=1)
    return loss.view(targets.shape)


def rows_only(values: torch.Tensor) -> torch.Tensor:
    """``values - values.detach()``: 0 in the forward pass, the gradient of ``values`` in
    the backward pass. Added to a loss, it changes what reaches the output rows and
    nothing that is logged."""
    return values - values.detach()


@register
@dataclass(frozen=True)
class EmbeddingOnlyHNS(Objective):
    """The ablation that isolates the hypothesis: HNS on the output rows only. The hidden
    states get plain cross-entropy's gradient; the rows get HNS's, so a row excluded at
    a position (its logit below the target's minus ``layout``) is not pushed away there.
    If this keeps HNS's gain, the gain comes from leaving rare rows alone, not from
    the hidden states seeing another objective. The loss logged is CE."""

    layout: float = 2.0

    name: ClassVar[str] = "hns-rows"
    arm: ClassVar[str] = "HNS-rows"
    role: ClassVar[str] = "ablation"  # at the layout HNS is compared at: not tuned
    split_head: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _float_sized("layout", self.layout, "a finite real number >= 0")
        object.__setattr__(self, "layout", check_ranged("layout", self.layout))

    def split_loss(self, z_hidden, z_rows, targets, context):
        ce = hns_cross_entropy(z_hidden, targets, math.inf, reduction="none")
        return ce + rows_only(hns_cross_entropy(z_rows, targets, self.layout, reduction="none"))


# Tokens per update in the reference language model of AGG (ysw1021/AGG, WikiText-103:
# --max-tokens 4096 --update-freq 8, the micro-batches of one update counted in one slot)
AGG_REFERENCE_TOKENS = 32768


@register
@dataclass(frozen=True)
class AdaptiveGradientGating(Objective):
    """AGG (Yu et al., ACL 2022): cross-entropy whose gradient to rare output rows is
    scaled down, the hidden states keeping CE's full gradient.

    Rarity is defined on the reference's scale. The reference counts each token over
    the last K updates of about ``AGG_REFERENCE_TOKENS`` = 32,768 tokens each and calls
    it rare when count / K < alpha: fewer than alpha occurrences per 32,768 tokens. Here
    a token is rare when count_in_window / tokens_in_window < alpha / 32,768, both
    counted over the last ``window`` steps (this one included; fewer at the start), so
    ``alpha`` means what it means there: 0.03 is the reference's WikiText-103 value. A
    step here is 12 x 64 = 768 tokens at the paper's batch: the per-step definition of
    earlier versions (rare when count / steps < a) is this one at alpha = a * 32768 /
    768, about 43 a (their 0.01 is 0.43 here, and 0.03 here is about 0.0007 there).

    At a position whose target is not rare, each rare row's logit gradient is
    multiplied by its rate on the reference's scale, count_in_window / tokens_in_window
    * 32,768 (gate 1: rows almost never seen are almost never pushed; below alpha, so
    below 1 for any alpha <= 1, the reference's range; above it the gate is held at 1).
    At a position whose target is rare, each other rare row's by its count over the
    mean count of the rare tokens, at most 1 (gate 2: the rarest are protected from the
    rare). Non-rare rows and the target's row keep gate 1.0. The counts are a state
    (``initial_state``), kept in checkpoints.

    ``window`` is K of the reference, in steps: 1000 steps here, about 0.75 epochs of
    the training text at the paper's batch (the reference uses one epoch).
    """

    alpha: float = 0.03
    window: int = 1000

    name: ClassVar[str] = "agg"
    arm: ClassVar[str] = "AGG"
    # from the reference's value to past the per-step 0.01 of earlier versions (0.43)
    tuning: ClassVar = Tuning("alpha", (0.03, 0.1, 0.3, 1.0), published=0.03)
    split_head: ClassVar[bool] = True
    # alpha 100 calls rare every token below 0.3% of the window's tokens; the grid and
    # its extension stay below it
    ALPHA_MAX: ClassVar[float] = 100.0
    # the counts are a (window, V) table of float64: 100,000 steps of the bilingual
    # character vocabulary are 104 MB (``initial_state`` checks the table's size for V)
    WINDOW_MAX: ClassVar[int] = 100_000
    STATE_BYTES_MAX: ClassVar[int] = 1 << 30

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", _in_range("alpha", self.alpha, 0.0, self.ALPHA_MAX))
        window = self.window
        whole = isinstance(window, int) and not isinstance(window, bool)
        if not whole or not (1 <= window <= self.WINDOW_MAX):
            allowed = f"an integer from 1 to {self.WINDOW_MAX} (steps)"
            raise ParameterError("window", window, allowed)

    def canonical(self) -> dict[str, Any]:
        # alpha per 32,768 tokens: runs of the per-step definition have other ids
        out = super().canonical()
        out["objective"]["alpha_per_tokens"] = AGG_REFERENCE_TOKENS
        return out

    def initial_state(self, vocab_size, device):
        # counts[k] holds the target counts of the step with index k modulo ``window``
        size = self.window * vocab_size * 8
        if size > self.STATE_BYTES_MAX:
            most = self.STATE_BYTES_MAX // (8 * vocab_size)
            allowed = f"at most {most} steps for a vocabulary of {vocab_size} (1 GiB of counts)"
            raise ParameterError("window", self.window, allowed)
        counts = torch.zeros(self.window, vocab_size, dtype=torch.float64, device=device)
        return {"counts": counts}

    def split_loss(self, z_hidden, z_rows, targets, context):
        if context.state is None:
            raise ValueError("AGG needs LossContext.state (Objective.initial_state)")
        counts = context.state["counts"]
        y = targets.reshape(-1)
        slot = counts[context.step % self.window]
        slot.zero_()
        slot.index_add_(0, y, torch.ones_like(y, dtype=counts.dtype))
        gates = agg_gates(counts.sum(dim=0), y, self.alpha).to(z_rows.dtype)
        V = z_rows.size(-1)
        rows = z_rows.reshape(-1, V)
        gated = gates * rows + (1.0 - gates) * rows.detach()
        ce = hns_cross_entropy(z_hidden, targets, math.inf, reduction="none")
        gated_ce = hns_cross_entropy(gated, y, math.inf, reduction="none").view(targets.shape)
        return ce + rows_only(gated_ce)


def agg_gates(
    window_counts: torch.Tensor,
    targets: torch.Tensor,
    alpha: float,
    tokens_per_update: int = AGG_REFERENCE_TOKENS,
) -> torch.Tensor:
    """AGG's gates (N, V) for flat ``targets`` (N,), given each token's count over the
    window (``window_counts``, (V,)): rate = count / (sum of the counts) *
    ``tokens_per_update``, the occurrences per update of the reference's size, and
    rare = rate < ``alpha``. A position with a non-rare target gates each rare token by
    min(rate, 1); one with a rare target gates each rare token by min(count / mean rare
    count, 1); every other entry, the target's own included, is 1."""
    total = window_counts.sum()
    rate = window_counts / total.clamp(min=1.0) * tokens_per_update
    rare = rate < alpha
    ones = torch.ones_like(rate)
    gate1 = torch.where(rare, rate.clamp(max=1.0), ones)
    if bool(rare.any()):
        mean_rare = window_counts[rare].mean()
        ratio = window_counts / mean_rare if float(mean_rare) > 0 else ones
        gate2 = torch.where(rare, ratio.clamp(max=1.0), ones)
    else:
        gate2 = ones
    gates = torch.where(rare[targets].unsqueeze(1), gate2.unsqueeze(0), gate1.unsqueeze(0))
    return gates.scatter(1, targets.unsqueeze(1), 1.0)


def _in_range(name: str, value: Any, low: float, high: float) -> float:
    """``float(value)`` for a real number in [low, high]; anything else (NaN, an
    infinity, an integer too large for a float, a bool, a string) is a ParameterError
    that names ``name``. Compared before it is converted, so a huge int never overflows."""
    allowed = f"a real number from {low:g} to {high:g}"
    if not _is_number(value) or not (low <= value <= high):  # NaN fails the comparison
        raise ParameterError(name, value, allowed)
    return float(value)


def _float_sized(name: str, value: Any, allowed: str) -> None:
    """Refuse an int too large for a float (``float()`` would raise OverflowError)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > sys.float_info.max:
        raise ParameterError(name, value, allowed)


def objective_for_layout(
    layout: float = math.inf, layout_schedule: str = "constant", layout_end: float = math.inf
) -> Objective:
    """The objective a layout describes: CE for a constant infinite layout (the layout
    sweep's CE arm, and the flat config fields of earlier versions), HNS otherwise."""
    if layout_schedule == "constant" and _is_number(layout) and layout == math.inf:
        if not (_is_number(layout_end) and layout_end == math.inf):
            allowed = "inf unless layout_schedule is 'linear' or 'cosine'"
            raise ParameterError("layout_end", layout_end, allowed)
        return CrossEntropy()
    return HardNegatives(layout=layout, schedule=layout_schedule, layout_end=layout_end)


def full_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy of the full softmax (what every run is also logged with)."""
    V = logits.size(-1)
    return F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none").view(
        targets.shape
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _json_values(values: dict[str, Any]) -> dict[str, Any]:
    """Floats as floats (2 and 2.0 are one value) and infinities as 'inf'."""
    out = {}
    for key, value in values.items():
        if isinstance(value, float) and math.isinf(value):
            value = "inf" if value > 0 else "-inf"
        out[key] = value
    return out


def check_objective(value: Any) -> Objective:
    """Return ``value`` if it is an Objective instance; raise ParameterError otherwise."""
    if not isinstance(value, Objective) or type(value) is Objective:
        allowed = "an objective such as CrossEntropy() or HardNegatives(layout=2.0)"
        raise ParameterError("objective", value, allowed)
    return value


__all__ = [
    "AGG_REFERENCE_TOKENS",
    "ENTMAX_BISECTIONS",
    "LAYOUT_SCHEDULES",
    "TUNING_SIDES",
    "Tuning",
    "entmax_bisect_loss",
    "REGISTRY",
    "AdaptiveGradientGating",
    "EmbeddingOnlyHNS",
    "agg_gates",
    "rows_only",
    "CosineRegularised",
    "CrossEntropy",
    "Entmax15",
    "Focal",
    "HardNegatives",
    "LogitAdjusted",
    "LossContext",
    "Objective",
    "check_objective",
    "full_cross_entropy",
    "make_objective",
    "mean_pairwise_cosine",
    "objective_for_layout",
    "objective_from_dict",
    "register",
]
