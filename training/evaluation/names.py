"""The documented names of ``metrics.json``: the promotion gate and dashboards key on them.

``baseline_<name>`` carries the same metric for the identity map (no translation), for
every metric below that has one. For the cycle metrics only the return leg is the identity
map (F(G(a)) becomes G(a)): identity maps in both directions would reconstruct perfectly.
The README's evaluation section lists the same table.
"""
from __future__ import annotations

# name: (description, better: "higher" | "lower" | "" for counts and provenance)
METRICS: dict[str, tuple[str, str]] = {
    "cycle_l1_A": ("mean |F(G(a)) - a| on [0, 1] over testA (a -> B -> A)", "lower"),
    "cycle_psnr_A": ("PSNR of F(G(a)) against a, dB (capped at 100)", "higher"),
    "cycle_ssim_A": ("SSIM of F(G(a)) against a (Gaussian window 11, sigma 1.5)", "higher"),
    "cycle_l1_B": ("mean |G(F(b)) - b| on [0, 1] over testB (b -> A -> B)", "lower"),
    "cycle_psnr_B": ("PSNR of G(F(b)) against b, dB (capped at 100)", "higher"),
    "cycle_ssim_B": ("SSIM of G(F(b)) against b", "higher"),
    "identity_l1_A": ("mean |G(b) - b| over testB: the A->B generator leaves B images alone "
                      "(the authors' idt_A)", "lower"),
    "identity_l1_B": ("mean |F(a) - a| over testA: the B->A generator leaves A images alone "
                      "(the authors' idt_B)", "lower"),
    "kid_AtoB_mean": ("KID (raw, not x1000) between G(testA) and testB on EfficientNet-Lite0 features, "
                      "mean over subsets", "lower"),
    "kid_AtoB_std": ("standard deviation of KID over subsets", ""),
    "kid_BtoA_mean": ("KID between F(testB) and testA, mean over subsets", "lower"),
    "kid_BtoA_std": ("standard deviation of KID over subsets", ""),
    "fd_effnet_AtoB": ("Fréchet distance between G(testA) and testB on EfficientNet-Lite0 features "
                       "(rank-deficient at test-set sizes: biased, compare only on one test set)", "lower"),
    "fd_effnet_BtoA": ("Fréchet distance between F(testB) and testA on EfficientNet-Lite0 features", "lower"),
    "fid_AtoB": ("standard FID (Inception-v3 pool features) between G(testA) and testB; "
                 "only when evaluate.inception_weights exists locally", "lower"),
    "fid_BtoA": ("standard FID between F(testB) and testA; only with local Inception weights", "lower"),
    "domain_success_AtoB": ("share of G(testA) the linear probe calls B", "higher"),
    "domain_success_BtoA": ("share of F(testB) the linear probe calls A", "higher"),
    "probe_ceiling_AtoB": ("share of real testB the probe calls B: the best domain_success_AtoB can do",
                           "higher"),
    "probe_ceiling_BtoA": ("share of real testA the probe calls A: the best domain_success_BtoA can do",
                           "higher"),
    "probe_floor_AtoB": ("share of untranslated testA the probe calls B (= baseline_domain_success_AtoB)", ""),
    "probe_floor_BtoA": ("share of untranslated testB the probe calls A (= baseline_domain_success_BtoA)", ""),
    "probe_accuracy_test": ("probe accuracy on real testA + testB", "higher"),
    "probe_accuracy_train": ("probe accuracy on its own training features", ""),
    "synthetic_domain_success_AtoB": ("synthetic data only: share of G(testA) with the generator's "
                                      "domain statistic > 0 (B-like)", "higher"),
    "synthetic_domain_success_BtoA": ("synthetic data only: share of F(testB) with the domain statistic < 0 "
                                      "(A-like)", "higher"),
    "n_test_A": ("test images of domain A evaluated", ""),
    "n_test_B": ("test images of domain B evaluated", ""),
    "n_probe_train_A": ("trainA images the probe was fitted on (capped by evaluate.probe_max_per_domain)", ""),
    "n_probe_train_B": ("trainB images the probe was fitted on", ""),
    "image_size": ("side the test images were evaluated at", ""),
    "test_manifest_sha256": ("provenance hash of the test split (see README)", ""),
}

# metrics that get a baseline_<name> twin: the identity map measured the same way
WITH_BASELINE = [
    "cycle_l1_A", "cycle_psnr_A", "cycle_ssim_A", "cycle_l1_B", "cycle_psnr_B", "cycle_ssim_B",
    "identity_l1_A", "identity_l1_B", "kid_AtoB_mean", "kid_AtoB_std", "kid_BtoA_mean", "kid_BtoA_std",
    "fd_effnet_AtoB", "fd_effnet_BtoA", "fid_AtoB", "fid_BtoA", "domain_success_AtoB", "domain_success_BtoA",
    "synthetic_domain_success_AtoB", "synthetic_domain_success_BtoA",
]

# the keys the promotion gate reads: they must always be present
GATE_KEYS = ["kid_AtoB_mean", "kid_BtoA_mean", "cycle_psnr_A", "cycle_psnr_B",
             "domain_success_AtoB", "domain_success_BtoA", "test_manifest_sha256"]
