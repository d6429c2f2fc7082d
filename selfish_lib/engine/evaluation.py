"""Deterministic evaluation on a whole split.

The split is cut into non-overlapping windows of ``block_size`` that cover
every position exactly once (the last window is shorter), so a number is a
property of the model and the split, not of a random batch. Per target token
we keep *sums* (count, loss, hits, reciprocal ranks); any grouping (language,
frequency group, overall) is then an exact ratio of sums. A token with no
occurrence has count 0 and NaN metrics, never 0.

For a bilingual model every window is evaluated twice: in the high-resource
alphabet (ids as they are) and in the low-resource one (ids + vocab_size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .model import GPT
from .validation import ParameterError, check_float, check_int

METRICS = ("loss", "top1", "recall5", "mrr")
SUMS = ("count", "loss_sum", "top1_sum", "top5_sum", "rr_sum")


def windows(
    ids: torch.Tensor, block_size: int, stride: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Inputs and targets of non-overlapping windows covering every next-token position.

    Returns a list of (x, y) batches: one (n_full, block_size) batch and, when
    the length is not a multiple, one (1, remainder) batch. With ``stride`` k > 1 only
    windows 0, k, 2k, ... of that sequence are kept (the shorter last window too when
    its index is a multiple of k): a systematic sample spread over the whole text.
    """
    stride = check_int("stride", stride, 1)
    x, y = ids[:-1], ids[1:]
    n_full = len(x) // block_size
    out = []
    if n_full:
        cut = n_full * block_size
        full_x, full_y = x[:cut].view(n_full, block_size), y[:cut].view(n_full, block_size)
        out.append((full_x[::stride], full_y[::stride]))
    if len(x) % block_size and n_full % stride == 0:
        start = n_full * block_size
        out.append((x[start:].unsqueeze(0), y[start:].unsqueeze(0)))
    return out


def position_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-position loss, rank of the target, top-1 and top-5 hits and reciprocal rank.
    ``logits`` (N, V), ``targets`` (N,).

    The rank is 1 + the number of *other* tokens whose logit is at least the target's:
    ties count against the target (pessimistic), so a model that cannot tell the target
    from k others does not score as if it had chosen it. With every logit equal the
    target ranks last (V) and top-1 is 0, not 1."""
    logits = logits.float()
    logp = F.log_softmax(logits, dim=-1)
    target_logit = logits.gather(1, targets.unsqueeze(1))
    # counts the target itself once (its logit equals itself): that is the "1 +"
    rank = (logits >= target_logit).sum(dim=1)
    return {
        "loss": -logp.gather(1, targets.unsqueeze(1)).squeeze(1),
        "rank": rank,
        "top1": (rank == 1).double(),
        "top5": (rank <= 5).double(),
        "rr": 1.0 / rank.double(),
    }


def host_reduction(device: torch.device | str) -> bool:
    """Whether per-token sums of values computed on ``device`` are added on the host.

    On the CPU ``bincount`` adds the positions one after another, always in the same
    order. On a GPU a weighted ``bincount`` (like ``index_add_``) adds with atomics, in
    an order that changes from run to run (and ``torch.use_deterministic_algorithms``
    refuses it): there the per-position values wait on the device and are added on the
    host, by the CPU's own code, in the CPU's order."""
    return torch.device(device).type != "cpu"


def _add_token_sums(
    acc: dict[str, torch.Tensor], y: torch.Tensor, m: dict[str, torch.Tensor], V: int
) -> None:
    """Add one batch's per-position metrics ``m`` into the per-token sums ``acc``."""
    acc["count"] += torch.bincount(y, minlength=V).double()
    acc["loss_sum"] += torch.bincount(y, weights=m["loss"].double(), minlength=V)
    acc["top1_sum"] += torch.bincount(y, weights=m["top1"], minlength=V)
    acc["top5_sum"] += torch.bincount(y, weights=m["top5"], minlength=V)
    acc["rr_sum"] += torch.bincount(y, weights=m["rr"], minlength=V)


@torch.no_grad()
def evaluate_ids(
    model: GPT,
    ids: torch.Tensor,
    device: torch.device | str = "cpu",
    batch_windows: int = 256,
    stride: int = 1,
) -> pd.DataFrame:
    """Per-target-token sums over every position of ``ids`` (1-D, model-vocabulary ids),
    or, with ``stride`` k > 1, over every position of every k-th window (``windows``).

    Columns: token, count, loss_sum, top1_sum, top5_sum, rr_sum (one row per model token).
    The sums are deterministic on every device (``host_reduction``).
    """
    was_training = model.training
    model.eval()
    V = model.vocab_size
    on_host = host_reduction(device)
    acc = {
        k: torch.zeros(V, dtype=torch.float64, device="cpu" if on_host else device) for k in SUMS
    }
    pending = []  # (targets, metrics) of each batch, on the device, when added on the host
    for x_all, y_all in windows(ids, model.config.block_size, stride):
        for start in range(0, len(x_all), batch_windows):
            x = x_all[start : start + batch_windows].to(device)
            y = y_all[start : start + batch_windows].to(device).reshape(-1)
            m = position_metrics(model(x).reshape(-1, V), y)
            if on_host:  # one copy to the host at the end, not one wait per batch
                pending.append((y, {k: m[k] for k in ("loss", "top1", "top5", "rr")}))
            else:
                _add_token_sums(acc, y, m, V)
    for y, m in pending:  # in batch order, as the CPU adds them
        _add_token_sums(acc, y.cpu(), {k: v.cpu() for k, v in m.items()}, V)
    model.train(was_training)
    frame = pd.DataFrame({k: v.cpu().numpy() for k, v in acc.items()})
    frame.insert(0, "token", np.arange(V))
    frame["count"] = frame["count"].astype(np.int64)
    return frame


def evaluate_split(
    model: GPT,
    split: torch.Tensor,
    base_vocab_size: int,
    bilingual: bool,
    device: torch.device | str = "cpu",
    stride: int = 1,
) -> pd.DataFrame:
    """Evaluate a whole split (one alphabet's ids), in both alphabets when ``bilingual``;
    with ``stride`` k > 1 its every k-th window only (``windows``).

    Token ``i + base_vocab_size`` rows hold the low-resource alphabet's sums.
    """
    frame = evaluate_ids(model, split, device, stride=stride)
    if bilingual:
        low = evaluate_ids(model, split + base_vocab_size, device, stride=stride)
        frame = frame.set_index("token").add(low.set_index("token")).reset_index()
        frame["count"] = frame["count"].astype(np.int64)
    return frame


def evaluate_languages(
    model: GPT,
    english: torch.Tensor,
    language: torch.Tensor,
    device: torch.device | str = "cpu",
    stride: int = 1,
) -> pd.DataFrame:
    """Evaluate a model of a real second language on each language's own validation text
    (both 1-D, in the model's ids), each text on its own windows (every ``stride``-th).

    One row per model token and language: rows 0 .. M-1 (``token`` = the id) hold the
    sums over English's text, rows M .. 2M-1 (``token`` = M + id) those over the
    language's, M the model's vocabulary. A 'shared' id, a target in both texts, so has
    a row for each; a token with no occurrence in a text has count 0 there (NaN
    metrics, never dropped)."""
    M = model.vocab_size
    high = evaluate_ids(model, english, device, stride=stride)
    low = evaluate_ids(model, language, device, stride=stride)
    low["token"] = low["token"] + M
    return pd.concat([high, low], ignore_index=True)


def _position_batches(model: GPT, ids: torch.Tensor, device, batch_windows: int):
    """(logits (N, V), targets (N,)) of every position of ``ids``, batch by batch, in the
    order of ``windows``."""
    for x_all, y_all in windows(ids, model.config.block_size):
        for start in range(0, len(x_all), batch_windows):
            x = x_all[start : start + batch_windows].to(device)
            y = y_all[start : start + batch_windows].to(device).reshape(-1)
            yield model(x).reshape(-1, model.vocab_size), y


@torch.no_grad()
def position_values(
    model: GPT, ids: torch.Tensor, device: torch.device | str = "cpu", batch_windows: int = 256
) -> pd.DataFrame:
    """Every position of ``ids`` (1-D, model-vocabulary ids) in the order of ``windows``:
    its target and its loss, top-1 and top-5 hits and reciprocal rank (what
    ``evaluate_ids`` sums per token), for resampling positions."""
    was_training = model.training
    model.eval()
    parts = []
    for logits, y in _position_batches(model, ids, device, batch_windows):
        m = position_metrics(logits, y)
        parts.append(
            pd.DataFrame(
                {
                    "token": y.cpu().numpy(),
                    "loss": m["loss"].double().cpu().numpy(),
                    "top1": m["top1"].cpu().numpy(),
                    "recall5": m["top5"].cpu().numpy(),
                    "mrr": m["rr"].cpu().numpy(),
                }
            )
        )
    model.train(was_training)
    return pd.concat(parts, ignore_index=True)


# The nucleus masses at which sampling is measured (top-p sampling's usual range).
NUCLEUS_MASSES = (0.8, 0.9, 0.95)


def nucleus_values(
    logits: torch.Tensor,
    targets: torch.Tensor,
    masses: Sequence[float] = NUCLEUS_MASSES,
    temperature: float = 1.0,
) -> dict[str, torch.Tensor]:
    """What top-p sampling from softmax(``logits`` / ``temperature``) (N, V) sees at each
    position:

    - ``confidence``, the top probability, and ``correct``, whether the target is top-1
      (ties against the target, as in ``position_metrics``; a temperature never changes
      it); ``brier``, the squared distance between the distribution and the target's
      one-hot vector; ``p_target``, the target's probability, and ``nll``, minus its log;
    - ``place``, the target's 1-based place in the order the nucleus is cut from (by
      probability, ties in index order): the target is among the top k iff place <= k;
    - per mass p of ``masses``: ``size_p``, the number of tokens of the top-p nucleus N_p
      (the shortest prefix of that order whose mass reaches p, ``losses.nucleus_mask``),
      ``covered_p``, whether the target is inside it, ``mass_p``, its probability p(N_p)
      (at least p), ``hit_p``, the probability that a top-p sample (drawn from the
      nucleus renormalised) is the target, 1[y in N_p] p(y) / p(N_p), and ``floor_p``, the
      probability of the last token kept.
    """
    temperature = check_float("temperature", temperature, 0.0, min_inclusive=False)
    logp = F.log_softmax(logits.double() / temperature, dim=-1)
    probs = logp.exp()
    p_target = probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    rank = (logits >= logits.gather(1, targets.unsqueeze(1))).sum(dim=1)
    out = {
        "confidence": probs.max(dim=1).values,
        "correct": (rank == 1).double(),
        "brier": (probs * probs).sum(dim=1) - 2 * p_target + 1,
        "p_target": p_target,
        "nll": -logp.gather(1, targets.unsqueeze(1)).squeeze(1),
    }
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    through = sorted_p.cumsum(-1)
    before = through - sorted_p
    # the target's place in the same (stable) order the nucleus is cut from
    place = (order == targets.unsqueeze(1)).double().argmax(dim=1)
    out["place"] = (place + 1).double()
    for mass in masses:
        size = (before < mass).sum(dim=1)  # the prefix is contiguous: its length
        last = (size - 1).unsqueeze(1)
        covered = (place < size).double()
        kept = through.gather(1, last).squeeze(1)
        out[f"size_{mass}"] = size.double()
        out[f"covered_{mass}"] = covered
        out[f"mass_{mass}"] = kept
        out[f"hit_{mass}"] = covered * p_target / kept
        out[f"floor_{mass}"] = sorted_p.gather(1, last).squeeze(1)
    return out


def _values_frame(
    logits: torch.Tensor, targets: torch.Tensor, masses: Sequence[float], temperature: float
) -> pd.DataFrame:
    """``nucleus_values`` as a frame, with each position's target ``token`` first."""
    values = nucleus_values(logits, targets, masses, temperature)
    frame = pd.DataFrame({k: v.cpu().numpy() for k, v in values.items()})
    frame.insert(0, "token", targets.cpu().numpy())
    return frame


@torch.no_grad()
def sampling_values(
    model: GPT,
    ids: torch.Tensor,
    masses: Sequence[float] = NUCLEUS_MASSES,
    device: torch.device | str = "cpu",
    batch_windows: int = 64,
    temperature: float = 1.0,
) -> pd.DataFrame:
    """``nucleus_values`` at every position of ``ids`` (1-D, model-vocabulary ids), in the
    order of ``windows``, at ``temperature``, with each position's target ``token``."""
    temperature = check_float("temperature", temperature, 0.0, min_inclusive=False)
    was_training = model.training
    model.eval()
    parts = [
        _values_frame(logits, y, masses, temperature)
        for logits, y in _position_batches(model, ids, device, batch_windows)
    ]
    model.train(was_training)
    return pd.concat(parts, ignore_index=True)


@torch.no_grad()
def position_logits(
    model: GPT, ids: torch.Tensor, device: torch.device | str = "cpu", batch_windows: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits (N, V; float32, on the CPU) and the targets (N,) of every position of
    ``ids`` (1-D, model-vocabulary ids), in the order of ``windows``: kept, so that a
    temperature can be fitted and the measures repeated at it without another pass."""
    was_training = model.training
    model.eval()
    logits, targets = [], []
    for z, y in _position_batches(model, ids, device, batch_windows):
        logits.append(z.float().cpu())
        targets.append(y.cpu())
    model.train(was_training)
    return torch.cat(logits), torch.cat(targets)


# Rows of logits handled at once by the functions below (a float64 copy of 16384 x 130
# logits is 17 MB): the whole split's copy would be the size of the split times V.
CHUNK_ROWS = 16384


def logit_values(
    logits: torch.Tensor,
    targets: torch.Tensor,
    masses: Sequence[float] = NUCLEUS_MASSES,
    temperature: float = 1.0,
) -> pd.DataFrame:
    """``sampling_values`` from kept logits (``position_logits``), at ``temperature``."""
    temperature = check_float("temperature", temperature, 0.0, min_inclusive=False)
    parts = [
        _values_frame(logits[s : s + CHUNK_ROWS], targets[s : s + CHUNK_ROWS], masses, temperature)
        for s in range(0, len(targets), CHUNK_ROWS)
    ]
    return pd.concat(parts, ignore_index=True)


def mean_nll(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> float:
    """The mean negative log-likelihood of ``targets`` under softmax(``logits`` / T)."""
    total = 0.0
    for s in range(0, len(targets), CHUNK_ROWS):
        z = logits[s : s + CHUNK_ROWS].double() / temperature
        y = targets[s : s + CHUNK_ROWS].unsqueeze(1)
        total += float((torch.logsumexp(z, dim=-1) - z.gather(1, y).squeeze(1)).sum())
    return total / max(1, len(targets))


# The range a fitted temperature is searched in, and the relative precision of 1/T.
TEMPERATURE_BOUNDS = (0.05, 20.0)
TEMPERATURE_TOLERANCE = 1e-7


def _nll_slope(logits: torch.Tensor, targets: torch.Tensor, beta: float) -> tuple[float, float]:
    """The first and second derivatives in beta = 1/T of the mean NLL of softmax(beta z):
    mean(E_p[z] - z_y) and mean(Var_p[z]), p = softmax(beta z)."""
    slope = curvature = 0.0
    for s in range(0, len(targets), CHUNK_ROWS):
        z = logits[s : s + CHUNK_ROWS]
        z = z if z.dtype in (torch.float32, torch.float64) else z.float()
        p = F.softmax(z * beta, dim=-1)
        mean = (p * z).sum(dim=-1)
        spread = (p * (z - mean.unsqueeze(1)) ** 2).sum(dim=-1)
        target = z.gather(1, targets[s : s + CHUNK_ROWS].unsqueeze(1)).squeeze(1)
        slope += float((mean - target).double().sum())
        curvature += float(spread.double().sum())
    return slope / len(targets), curvature / len(targets)


def fit_temperature(
    logits: torch.Tensor,
    targets: torch.Tensor,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    tolerance: float = TEMPERATURE_TOLERANCE,
) -> float:
    """The temperature T that minimises the mean NLL of softmax(``logits`` / T) on
    ``targets`` (temperature scaling, Guo et al. 2017): one number, so the ranking of the
    tokens, top-1 and every top-k, is unchanged.

    The NLL is convex in beta = 1/T (a log-sum-exp of functions linear in beta, minus a
    linear one; its second derivative is the mean variance of the logits under the
    model), so its one minimum is found by Newton's method on beta, kept inside a
    bracket that every step narrows (a step that would leave it bisects it, in log),
    until a step moves beta by less than ``tolerance`` of itself. A minimum beyond
    ``bounds`` (lowest, highest T) ends at that bound."""
    lo = check_float("bounds", bounds[0], 0.0, min_inclusive=False)
    hi = check_float("bounds", bounds[1], lo, min_inclusive=False)
    tolerance = check_float("tolerance", tolerance, 0.0, min_inclusive=False)
    if not len(targets):
        raise ParameterError("targets", "no position", "at least one position to fit on")
    beta_lo, beta_hi = 1.0 / hi, 1.0 / lo
    beta = min(max(1.0, beta_lo), beta_hi)
    for _ in range(200):  # bisection alone needs about 30 steps at the default tolerance
        slope, curvature = _nll_slope(logits, targets, beta)
        if slope == 0.0:
            break
        if slope > 0:  # the NLL rises with beta: its minimum lies below
            beta_hi = beta
        else:
            beta_lo = beta
        step = beta - slope / curvature if curvature > 0 else math.nan
        if not beta_lo < step < beta_hi:
            step = math.sqrt(beta_lo * beta_hi)
        moved = abs(step - beta)
        beta = step
        if moved <= tolerance * beta:
            break
    return 1.0 / beta


def add_metrics(sums: pd.DataFrame) -> pd.DataFrame:
    """Add the mean metrics (loss, top1, recall5, mrr) to a frame of sums; NaN where count is 0."""
    out = sums.copy()
    n = out["count"].astype(float).where(out["count"] > 0)
    out["loss"] = out["loss_sum"] / n
    out["top1"] = out["top1_sum"] / n
    out["recall5"] = out["top5_sum"] / n
    out["mrr"] = out["rr_sum"] / n
    return out


def aggregate(
    token_sums: pd.DataFrame, token_info: pd.DataFrame, by: Sequence[str] = ("language",)
) -> pd.DataFrame:
    """Metrics of groups of tokens: sums are added within each group of ``by``
    (columns of ``token_info``, joined on ``token``; extra keys such as
    ``step`` present in ``token_sums`` may be named too), then divided."""
    by = list(by)
    info_cols = ["token"] + [c for c in by if c in token_info.columns and c != "token"]
    merged = token_sums.merge(token_info[info_cols], on="token", how="left")
    if not by:
        summed = merged[list(SUMS)].sum().to_frame().T
    else:
        summed = merged.groupby(by, sort=True, observed=True)[list(SUMS)].sum().reset_index()
    summed["count"] = summed["count"].astype(np.int64)
    out = add_metrics(summed)
    return out[by + ["count", *METRICS]]


@torch.no_grad()
def probability_profile(
    model: GPT,
    split: torch.Tensor,
    base_vocab_size: int,
    bilingual: bool,
    layout: float,
    device: torch.device | str = "cpu",
    bins: int = 48,
    log10_min: float = -12.0,
    batch_windows: int = 256,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Where the probability goes on a whole split: per language (both alphabets when
    ``bilingual``), the histogram of log10 P of every non-target token at every position,
    and a summary of the mass outside the target.

    Returns ``(histogram, summary)``. ``histogram``: language, bin_lo, bin_hi, fraction
    (of all non-target probabilities; values below ``log10_min`` fall in the first bin).
    ``summary``: language, positions, target_prob (mean P(target)), outside_mass (mean
    1 - P(target)), easy_mass (mean total probability of the tokens that HNS at
    ``layout`` would exclude, i.e. with P(T) < P(target)·e^-layout: mass that HNS never
    pushes down, so it stays in the loss), easy_count (their mean number), loss.
    """
    was_training = model.training
    model.eval()
    edges = torch.linspace(log10_min, 0.0, bins + 1, dtype=torch.float64)
    langs = [("high", 0)] + ([("low", base_vocab_size)] if bilingual else [])
    hist_rows, summary_rows = [], []
    for language, offset in langs:
        counts = torch.zeros(bins, dtype=torch.float64)
        sums = {"target_prob": 0.0, "easy_mass": 0.0, "easy_count": 0.0, "loss": 0.0}
        positions = 0
        for x_all, y_all in windows(split + offset, model.config.block_size):
            for start in range(0, len(x_all), batch_windows):
                x = x_all[start : start + batch_windows].to(device)
                y = y_all[start : start + batch_windows].to(device).reshape(-1)
                logits = model(x).reshape(len(y), -1).float()
                logp = F.log_softmax(logits, dim=-1)
                target_logp = logp.gather(1, y.unsqueeze(1))
                # Histogram of every probability minus that of the targets: the same as
                # selecting the non-targets, without materializing the selection.
                log10p = (logp / math.log(10.0)).clamp(min=log10_min)
                counts += torch.histc(log10p, bins=bins, min=log10_min, max=0.0).double().cpu()
                counts -= (
                    torch.histc(log10p.gather(1, y.unsqueeze(1)), bins=bins, min=log10_min, max=0.0)
                    .double()
                    .cpu()
                )
                # Easy negatives: below the HNS margin (the target itself never is).
                easy = logp < target_logp - layout
                probs = logp.exp()
                sums["target_prob"] += float(target_logp.exp().sum())
                sums["easy_mass"] += float((probs * easy).sum())
                sums["easy_count"] += float(easy.sum())
                sums["loss"] += float(-target_logp.sum())
                positions += len(y)
        total = counts.sum().clamp(min=1.0)
        for k in range(bins):
            hist_rows.append(
                {
                    "language": language,
                    "bin_lo": float(edges[k]),
                    "bin_hi": float(edges[k + 1]),
                    "fraction": float(counts[k] / total),
                }
            )
        mean = {k: v / max(1, positions) for k, v in sums.items()}
        summary_rows.append(
            {
                "language": language,
                "positions": positions,
                "target_prob": mean["target_prob"],
                "outside_mass": 1.0 - mean["target_prob"],
                "easy_mass": mean["easy_mass"],
                "easy_count": mean["easy_count"],
                "loss": mean["loss"],
            }
        )
    model.train(was_training)
    return pd.DataFrame(hist_rows), pd.DataFrame(summary_rows)
