"""The one specification of the metrics an evaluation writes: name, meaning, which way is
better, unit, whether a ``baseline_<name>`` twin exists, and how the promotion gate treats it.
Evaluation writes these names, the report and the docs' table show them, the config checks
``register.gate_metrics`` against them and the gate takes each metric's direction, margin and
floor from here; the promotion gate and dashboards key on the names, so they are stable.

``baseline_<name>`` is the same metric for the identity map (no translation). For the cycle
metrics only the return leg is the identity map (F(G(a)) becomes G(a)): identity maps in
both directions would reconstruct perfectly.

A metric can gate when it names the ``register:`` key holding its margin (``margin``); the
gate then requires challenger <= champion + margin (lower is better) or challenger >=
champion - margin (higher is better), the same against the best value any promoted version
reached on an equal evaluation fingerprint, and challenger >= the ``floor`` key's value if any.

Provenance entries (``provenance=True``) are text: the test split's hash and the evaluation
fingerprint, which says what exactly was measured (``evaluate.py`` builds it).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    meaning: str
    better: str | None = None       # "higher" | "lower" | None: counts, spreads, provenance
    unit: str = ""                  # "dB", "share" (0..1), "" for plain numbers
    baseline: bool = False          # the metrics also hold baseline_<name>
    margin: str | None = None       # register.<key> with the gate's margin; None: cannot gate
    floor: str | None = None        # register.<key> with an absolute floor the gate also applies
    gate: bool = False              # in register.gate_metrics by default
    provenance: bool = False        # a text value saying what was measured, not a measurement

    @property
    def lower_is_better(self) -> bool:
        return self.better == "lower"


def _cycle(domain: str, via: str) -> list[Metric]:
    x = domain.lower()
    there, back = ("G", "F") if domain == "A" else ("F", "G")
    return [
        Metric(f"cycle_l1_{domain}", f"mean |{back}({there}({x})) - {x}| on [0, 1] over test{domain} "
               f"({domain} -> {via} -> {domain})", "lower", baseline=True),
        Metric(f"cycle_psnr_{domain}", f"PSNR of {back}({there}({x})) against {x}, dB (capped at 100)", "higher",
               "dB", baseline=True, margin="psnr_margin", gate=True),
        Metric(f"cycle_ssim_{domain}", f"SSIM of {back}({there}({x})) against {x} (Gaussian window 11, sigma 1.5)",
               "higher", baseline=True),
    ]


def _ood(domain: str, direction: str) -> Metric:
    return Metric(f"ood_cycle_psnr_{domain}", f"the evaluate.ood_percentile-th percentile (default 5th) of per-image "
                  f"cycle PSNR over test{domain}: the out-of-domain threshold. cyclegan export --metrics records it "
                  f"in the {direction} model (quality_threshold_db); serving flags an input whose cycle PSNR is "
                  "below it", unit="dB")


_SUCCESS = dict(unit="share", baseline=True, margin="success_margin", floor="min_domain_success")

_ALL = [
    *_cycle("A", "B"), *_cycle("B", "A"),
    _ood("A", "AtoB"), _ood("B", "BtoA"),
    Metric("ood_percentile", "the percentile of per-image cycle PSNR the out-of-domain thresholds are taken at "
           "(evaluate.ood_percentile)"),
    Metric("identity_l1_A", "mean |G(b) - b| over testB: the A->B generator leaves B images alone "
           "(the authors' idt_A)", "lower", baseline=True),
    Metric("identity_l1_B", "mean |F(a) - a| over testA: the B->A generator leaves A images alone "
           "(the authors' idt_B)", "lower", baseline=True),
    Metric("kid_AtoB_mean", "KID (raw, not x1000) between G(testA) and testB on EfficientNet-Lite0 features, "
           "mean over subsets", "lower", baseline=True, margin="kid_margin", gate=True),
    Metric("kid_AtoB_std", "standard deviation of KID over subsets", baseline=True),
    Metric("kid_BtoA_mean", "KID between F(testB) and testA, mean over subsets", "lower", baseline=True,
           margin="kid_margin", gate=True),
    Metric("kid_BtoA_std", "standard deviation of KID over subsets", baseline=True),
    Metric("fd_effnet_AtoB", "Fréchet distance between G(testA) and testB on EfficientNet-Lite0 features "
           "(rank-deficient at test-set sizes: biased, compare only on one test set)", "lower", baseline=True),
    Metric("fd_effnet_BtoA", "Fréchet distance between F(testB) and testA on EfficientNet-Lite0 features", "lower",
           baseline=True),
    Metric("fid_AtoB", "standard FID (Inception-v3 pool features) between G(testA) and testB; "
           "only when evaluate.inception_weights exists locally", "lower", baseline=True),
    Metric("fid_BtoA", "standard FID between F(testB) and testA; only with local Inception weights", "lower",
           baseline=True),
    Metric("domain_success_AtoB", "share of G(testA) the linear probe calls B", "higher", gate=True, **_SUCCESS),
    Metric("domain_success_BtoA", "share of F(testB) the linear probe calls A", "higher", gate=True, **_SUCCESS),
    Metric("probe_ceiling_AtoB", "share of real testB the probe calls B: the best domain_success_AtoB can do",
           "higher", "share"),
    Metric("probe_ceiling_BtoA", "share of real testA the probe calls A: the best domain_success_BtoA can do",
           "higher", "share"),
    Metric("probe_floor_AtoB", "share of untranslated testA the probe calls B (= baseline_domain_success_AtoB)",
           unit="share"),
    Metric("probe_floor_BtoA", "share of untranslated testB the probe calls A (= baseline_domain_success_BtoA)",
           unit="share"),
    Metric("probe_accuracy_test", "probe accuracy on real testA + testB", "higher", "share"),
    Metric("probe_accuracy_train", "probe accuracy on its own training features", unit="share"),
    Metric("synthetic_domain_success_AtoB", "synthetic data only: share of G(testA) with the generator's "
           "domain statistic > 0 (B-like)", "higher", **_SUCCESS),
    Metric("synthetic_domain_success_BtoA", "synthetic data only: share of F(testB) with the domain statistic "
           "< 0 (A-like)", "higher", **_SUCCESS),
    Metric("n_test_A", "test images of domain A evaluated"),
    Metric("n_test_B", "test images of domain B evaluated"),
    Metric("n_probe_train_A", "trainA images the probe was fitted on (capped by evaluate.probe_max_per_domain)"),
    Metric("n_probe_train_B", "trainB images the probe was fitted on"),
    Metric("image_size", "side the test images were evaluated at"),
    Metric("test_manifest_sha256", "provenance hash of the whole test split (see docs/evaluation.md)",
           provenance=True),
    Metric("evaluation_fingerprint", "provenance: sha256 over everything that changes a number (the evaluated "
           "images, image size, feature network and weights, evaluate settings, metric code, libraries, "
           "device type; the evaluation info file lists the parts). The gate compares only equal fingerprints",
           provenance=True),
]

METRICS: dict[str, Metric] = {m.name: m for m in _ALL}
# metrics that get a baseline_<name> twin: the identity map measured the same way
WITH_BASELINE = [m.name for m in _ALL if m.baseline]
# what register.gate_metrics holds unless params say otherwise
DEFAULT_GATE = [m.name for m in _ALL if m.gate]
# the key of the evaluation fingerprint: the gate reuses stored figures only on an equal one
FINGERPRINT = "evaluation_fingerprint"
PROVENANCE = [m.name for m in _ALL if m.provenance]
# keys every evaluation's metrics hold: the default gate's metrics and what was measured
GATE_KEYS = [*DEFAULT_GATE, *PROVENANCE]


def can_gate(name: str) -> bool:
    metric = METRICS.get(name)
    return metric is not None and metric.margin is not None and metric.better is not None


def gateable() -> list[str]:
    return [m.name for m in _ALL if m.margin is not None]
