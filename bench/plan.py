"""Study-plan mastery: does the estimate predict a student's next attempts, better than raw error rates and chance?

    python bench/plan.py [--students 300] [--attempts 40] [--topics 8] [--seeds 3] [--thresholds 1,2,3,4,6]

Simulated students (tutor.infer.plan.simulate_students) in two worlds:
  - mastery: each student has a mastery of each topic (the chance of each
    mark), from their ability and the topic's difficulty, rising a little at
    every attempt; questions of a topic differ in difficulty;
  - tracing: Bayesian Knowledge Tracing's own world: a topic is known or not,
    may be learnt at each attempt, marks come with guesses and slips.
Each student answers --attempts questions (1 to 8 marks, mostly 1) on random
topics. Time-ordered split per student: the first 70% of their attempts are
the evidence, the rest are predicted from it; every mark of a predicted
attempt is one 0/1 outcome. Methods (tutor.infer.plan.simulate):
  - estimate: `plan`'s mastery, tracing fitted on the whole class's evidence;
  - estimate, one student: the same, fitted on the student's own evidence
    only (what `plan` does with one student's results);
  - beta only: the Beta posterior, no tracing;
  - raw: the share of marks so far in the topic (the error rate's complement);
  - base rate: everyone's share of marks; chance: 0.5.
AUC (0.5 is chance) and log-loss (lower is better; ln 2 = 0.693 is a coin),
averaged over --seeds seeds. The ratios: raw's log-loss over the method's, and
the method's AUC above 0.5 over raw's. Then the threshold sweep: the attempts
in a topic from which tracing replaces the Beta posterior (plan.TRACE_FROM).
"""

import argparse
import time


def averaged(seeds: int, **kwargs) -> dict[str, dict[str, float]]:
    """simulate()'s figures, each the mean over `seeds` seeds."""
    from tutor.infer.plan import simulate

    runs = [simulate(seed=seed, **kwargs) for seed in range(seeds)]
    return {method: {k: sum(r[method][k] for r in runs) / seeds for k in ("auc", "log_loss", "marks")} for method in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--attempts", type=int, default=40, help="attempts per student")
    parser.add_argument("--topics", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--thresholds", default="1,2,3,4,6", help="tracing thresholds to sweep, comma-separated")
    args = parser.parse_args()
    from tutor.infer.plan import TRACE_FROM, WORLDS

    size = dict(students=args.students, attempts=args.attempts, topics=args.topics)
    print(f"{args.students} simulated students x {args.attempts} attempts over {args.topics} topics; first 70% of each "
          f"student's attempts predict the rest; mean of {args.seeds} seeds; tracing from {TRACE_FROM} attempts\n")
    for world in WORLDS:
        start = time.perf_counter()
        result = averaged(args.seeds, world=world, **size)
        seconds = (time.perf_counter() - start) / args.seeds
        raw = result["raw"]
        print(f"world: {world} ({result['raw']['marks']:.0f} predicted marks per seed, {seconds:.1f} s per seed)")
        print(f"{'method':<24}{'AUC':>8}{'log-loss':>10}{'raw/loss':>10}{'AUC gain/raw':>14}")
        for method, figures in result.items():
            gain = (figures["auc"] - 0.5) / (raw["auc"] - 0.5) if raw["auc"] != 0.5 else float("nan")
            print(f"{method:<24}{figures['auc']:>8.3f}{figures['log_loss']:>10.3f}{raw['log_loss'] / figures['log_loss']:>10.2f}"
                  f"{gain:>14.2f}")
        print()
    print("threshold sweep: AUC / log-loss of the estimate (class fit | one student's fit)")
    thresholds = [int(t) for t in args.thresholds.split(",")]
    print(f"{'from':>6}" + "".join(f"{world + ' (class)':>24}{world + ' (one)':>24}" for world in WORLDS))
    for threshold in thresholds:
        cells = []
        for world in WORLDS:
            result = averaged(args.seeds, world=world, trace_from=threshold, **size)
            cells += [f"{result[m]['auc']:.4f} / {result[m]['log_loss']:.4f}" for m in ("estimate", "estimate, one student")]
        print(f"{threshold:>6}" + "".join(f"{cell:>24}" for cell in cells))


if __name__ == "__main__":
    main()
