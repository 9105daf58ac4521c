"""Experiment arms: the kinds of training job a round can run.

Every round trains the `ticket` arm (the pruned network, through
`LotteryPruner`) and then, on request, controls at the ticket's sparsity:
re-initialised, random, shuffled, pruned & fine-tuned, or pruned at
initialisation by SNIP, GraSP or SynFlow.
Each arm is a small class registered by name (the names `controls=` and
`--controls` accept), as open_lth's branches are: it says where in the round
its training starts and how a fresh model is prepared from the round's
ticket. Seeds come from each arm's fixed `seed_key`, never from the order in
which arms are listed or displayed.
"""

import math
import zlib

import numpy as np

from lth_keras import masks as masks_lib
from lth_keras import pruning, saliency
from lth_keras._registry import Policy, Registry
from lth_keras.callbacks import LotteryPruner, get_reset
from lth_keras.targets import Targets

__all__ = [
    "ARMS",
    "CONTROLS",
    "AT_INIT_EXAMPLES_PER_CLASS",
    "PFT_FREQUENCY",
    "PFT_SCHEDULES",
    "Arm",
    "AtInit",
    "GraspAtInit",
    "PruneFineTune",
    "RandomMask",
    "Reinit",
    "Shuffle",
    "SnipAtInit",
    "SynFlowAtInit",
    "Ticket",
    "gradual_end",
    "schedule",
]

#: How the `pft` arm prunes (`ExperimentConfig.pft_schedule`): at once, or
#: gradually along tfmot's `PolynomialDecay`.
PFT_SCHEDULES = ("oneshot", "polynomial")

#: Steps between the gradual `pft` arm's mask updates at most (tfmot's default);
#: it is the largest divisor of the pruning span up to this.
PFT_FREQUENCY = 100


class Arm(Policy):
    """Base class of experiment arms.

    Attributes:
        label: The name used in tables and plots.
        seed_key: An int that, with the run's seed and the round, seeds the
            arm's random draws. Defaults to a CRC-32 of the arm's name.
    """

    label = None
    seed_key = None

    def key(self):
        """The stable int that seeds this arm."""
        return self.seed_key if self.seed_key is not None else zlib.crc32(self.name.encode())

    def seed(self, config, round_):
        """The seed state of the arm at `round_`: a 1-element uint32 array."""
        return np.random.SeedSequence([config.seed, round_, self.key()]).generate_state(1)

    def start_period(self, config, round_):
        """The evaluation period the arm's training starts at in `round_`.

        Arms that rewind train from the rewind point (late resetting starts
        past period 0); others from the start.
        """
        if round_ > 0 and self.rewinds(config):
            return config.rewind_iteration // config.eval_every
        return 0

    def rewinds(self, config):
        """Whether the arm's weights come from the rewind point."""
        return get_reset(config.reset).rewinds

    def prepare(self, model, ticket_masks, config, round_, trained=None, batch=None):
        """Sets a control's masks and weights; the model holds the rewind point.

        Args:
            model: A model holding every weight of the rewind point, with
                full masks.
            ticket_masks: The ticket's masks at `round_`.
            config: The `ExperimentConfig`.
            round_: The round.
            trained: For arms whose `needs_trained()`, the ticket of round
                `round_ - 1` as a `lth_keras.Ticket` (its trained weights).
            batch: For arms whose `needs_batch()`, a batch `(x, y)` of
                training data (NumPy arrays).
        """
        raise NotImplementedError

    def needs_trained(self):
        """Whether `prepare` needs a trained ticket (of round `trained_round(...)`)."""
        return False

    def trained_round(self, config, round_):
        """The round whose trained ticket `prepare` gets: the previous one."""
        return round_ - 1

    def needs_batch(self):
        """Whether `prepare` needs a batch of training data."""
        return False

    def callbacks(self, ticket_masks, config, round_):
        """Callbacks the arm trains with beside the runner's (e.g. a pruner); none here.

        Made anew for each fit of the job, a resumed one included; they run
        before the evaluation callbacks.
        """
        return []

    def needs_callbacks(self, config):
        """Whether `callbacks` gives any (so the runner loads the ticket's masks for it)."""
        return False

    def early_stopping_from(self, config, round_):
        """The first iteration of the job (counted as in its records) early stopping may pick."""
        return 0

    def mask_iterations(self, ticket_iterations, config=None, dense_iterations=None):
        """Training steps spent to find this arm's mask, given the ticket's.

        Controls built from the ticket's mask (or its per-layer counts) cost
        what the ticket cost; masks found at initialisation cost nothing.

        Args:
            ticket_iterations: The ticket's `mask_iterations` at the round.
            config: The `ExperimentConfig`. Defaults to `None`.
            dense_iterations: The steps the dense network of round 0 trained
                before round 1's mask was drawn. Defaults to `None`.
        """
        return ticket_iterations


ARMS = Registry("control", Arm)


@ARMS.register("ticket")
class Ticket(Arm):
    """The winning ticket: pruned and reset by `LotteryPruner` (not a control)."""

    label = "winning ticket"
    seed_key = 0


@ARMS.register("reinit")
class Reinit(Arm):
    """The ticket's mask with new random weights (the paper's re-initialisation control)."""

    label = "random reinit"
    seed_key = 1  # the value of the first release, so its results reproduce

    def rewinds(self, config):
        return False

    def prepare(self, model, ticket_masks, config, round_, trained=None, batch=None):
        masks_lib.set_masks(model, ticket_masks)
        seed = int(self.seed(config, round_)[0])
        for i, layer in enumerate(masks_lib.masked_layers(model)):
            layer.reinitialize(seed + i)


@ARMS.register("random")
class RandomMask(Arm):
    """A random mask with the ticket's per-layer sparsity, on the rewind weights.

    (Not `LotteryPruner(method="random")`, which prunes at random round by
    round; this draws one random mask per round from scratch.)
    """

    label = "random mask"
    seed_key = 2  # the value of the first release, so its results reproduce

    def prepare(self, model, ticket_masks, config, round_, trained=None, batch=None):
        rng = np.random.default_rng(self.seed(config, round_))
        masks_lib.set_masks(model, pruning.random_masks_like(ticket_masks, rng))


@ARMS.register("pft")
class PruneFineTune(Arm):
    """Pruning & fine-tuning (Liu et al., ICML 2021), at once or gradually.

    With `config.pft_schedule="oneshot"` (the default): at round `r`, the
    mask of the ticket of round `r` applied to the weights round `r - 1`
    trained (every weight, as trained), then trained for `iterations` steps
    from step 0: the learning-rate schedule and the optimizer restart. Same
    mask, budget, evaluation and early stopping as the ticket.

    With `config.pft_schedule="polynomial"`, tfmot's way (gradual pruning,
    Zhu & Gupta 2017): at round `r`, the dense network round 0 trained (every
    weight, as trained, no mask) trains for `iterations` steps from step 0
    while a `LotteryPruner` with tfmot's `PolynomialDecay` (power 3) prunes
    each kernel by magnitude from sparsity 0 to the ticket's sparsity of
    round `r` in that kernel, reaching exactly the ticket's count of
    remaining weights at step `gradual_end(config)` (a fraction
    `pft_prune_fraction` of the budget), the masks updated every
    `frequency` steps (the largest divisor of that span up to
    `PFT_FREQUENCY`); then it fine-tunes with its mask fixed to the end of
    the budget. Its own magnitudes choose which weights go, so its mask is
    not the ticket's, only its per-kernel counts are. Early stopping reads
    only the evaluations from `gradual_end(config)` on, where the network
    has its final sparsity. The mask costs the dense training plus the
    pruning span (`mask_iterations`).

    Example:

    ```python
    config = preset("lenet", controls=("pft",), pft_schedule="polynomial")
    ```
    """

    label = "prune & fine-tune"
    seed_key = 4

    @staticmethod
    def gradual(config):
        """Whether the config asks for gradual pruning."""
        return config.pft_schedule == "polynomial"

    def rewinds(self, config):
        return False

    def prepare(self, model, ticket_masks, config, round_, trained=None, batch=None):
        trained.apply(model, weights="final")
        if not self.gradual(config):
            masks_lib.set_masks(model, ticket_masks)

    def needs_trained(self):
        return True

    def trained_round(self, config, round_):
        return 0 if self.gradual(config) else round_ - 1

    def needs_callbacks(self, config):
        return self.gradual(config)

    def callbacks(self, ticket_masks, config, round_):
        if not self.gradual(config):
            return []
        end = gradual_end(config)
        frequency = math.gcd(end, PFT_FREQUENCY)
        keys = list(ticket_masks)
        seed = int(self.seed(config, round_)[0])
        pruners = []
        for index, key in enumerate(keys):
            mask = np.asarray(ticket_masks[key])
            size, kept = int(mask.size), int(np.count_nonzero(mask))
            if kept == size:
                continue  # excluded, or not pruned yet: stays dense
            schedule = pruning.PolynomialDecay(
                0.0, _sparsity_keeping(size, kept), 0, end, power=3, frequency=frequency
            )
            targets = Targets(exclude=[k for k in keys if k != key])
            pruners.append(LotteryPruner(targets=targets, schedule=schedule, seed=seed + index))
        return pruners

    def early_stopping_from(self, config, round_):
        return gradual_end(config) if self.gradual(config) else 0

    def mask_iterations(self, ticket_iterations, config=None, dense_iterations=None):
        if config is None or not self.gradual(config):
            return ticket_iterations
        if dense_iterations is None:
            return None
        return dense_iterations + gradual_end(config)


def gradual_end(config):
    """The step at which the gradual `pft` arm reaches its sparsity.

    `pft_prune_fraction` of `iterations`, rounded down to a multiple of
    `eval_every` (so an evaluation sees the final sparsity), and at least
    `eval_every`.

    Example:

    ```python
    gradual_end(preset("lenet", iterations=5000, eval_every=500))  # 2500
    ```
    """
    every = config.eval_every
    return max(every, int(config.iterations * config.pft_prune_fraction) // every * every)


def _sparsity_keeping(size, kept):
    """A sparsity at which tfmot's count rule keeps exactly `kept` of `size` weights."""
    for sparsity in ((size - kept) / size, 1.0 - kept / size):
        if pruning.keep_count(size, sparsity) == kept:
            return sparsity
    raise ValueError(  # float32 cannot name the count: possible only above 2**24 weights
        f"No float32 sparsity keeps exactly {kept} of {size} weights under tfmot's rule."
    )


@ARMS.register("shuffle")
class Shuffle(Arm):
    """The ticket's mask shuffled within each layer, on the rewind weights.

    The sanity check of Frankle et al. (ICLR 2021) and Su et al. (NeurIPS
    2020): shuffling the kept positions within each kernel keeps only the
    per-layer sparsity. Masks found at initialisation (SNIP, GraSP,
    SynFlow) are reported to survive it; IMP tickets are not. For an
    unstructured ticket the shuffled mask has the same distribution as the
    `"random"` arm's (a uniformly random mask with the ticket's per-layer
    counts); the arms differ in their seeds and in intent: this one names
    the shuffle check. A structured ticket (units, blocks, N:M) loses its
    structure, since single entries are shuffled.
    """

    label = "shuffled mask"
    seed_key = 3

    def prepare(self, model, ticket_masks, config, round_, trained=None, batch=None):
        rng = np.random.default_rng(self.seed(config, round_))
        masks_lib.set_masks(model, pruning.shuffle_masks(ticket_masks, rng))


#: Training examples the data-based scores at initialisation see: 10 per
#: class, as the reference code (`--prune-dataset-ratio 10`), so 100 on MNIST.
AT_INIT_EXAMPLES_PER_CLASS = 10


class AtInit(Arm):
    """Base of the arms that prune the ticket's initial weights at once by a score.

    At round `r` the model holds the rewind point (the ticket's initial
    weights, unpruned); `prepare` prunes it in one shot with
    `lth_keras.saliency.prune_at_init` and `scope="global"` to exactly the
    ticket's number of remaining weights at round `r` (layers in
    `config.exclude` stay dense, as the ticket's do), and the arm then
    trains for the same iterations as the ticket. Global, not layerwise:
    SNIP, GraSP and SynFlow are defined and evaluated by their papers with
    one threshold over all weights, the per-layer allocation being part of
    what each score decides; SynFlow in particular exists to keep global
    pruning from disconnecting a layer (layer collapse), and layerwise
    pruning would hand it the ticket's per-layer counts instead. The count
    is exact for unstructured sparsity (tested); a structured
    `config.structure` rounds to its units. The mask costs no training
    (`mask_iterations` is 0). SNIP and GraSP score on the first
    `AT_INIT_EXAMPLES_PER_CLASS * classes` examples of the run's training
    stream (`batch`, passed by the runner); SynFlow needs no data.

    Example:

    ```python
    # As controls of a run: SNIP, GraSP and SynFlow at rounds 7 and 12.
    config = preset("lenet", controls=("snip", "grasp", "synflow"), control_rounds=(7, 12))
    # Or by hand, on a model holding the ticket's initial weights, unpruned:
    ARMS.get("snip").prepare(model, ticket_masks, config, 7, batch=(x[:100], y[:100]))
    ```
    """

    #: The `lth_keras.pruning` score class; built with `data=batch` unless data-free.
    score_class = None
    data_free = False

    def needs_batch(self):
        return not self.data_free

    def make_score(self, batch):
        """The `lth_keras.pruning.Score` this arm prunes with (`batch`: `(x, y)` or `None`)."""
        return self.score_class() if self.data_free else self.score_class(data=batch)

    def mask_iterations(self, ticket_iterations, config=None, dense_iterations=None):
        return 0

    def prepare(self, model, ticket_masks, config, round_, trained=None, batch=None):
        keys = _pooled_keys(model, config.exclude)
        size = sum(int(np.size(ticket_masks[key])) for key in keys)
        kept = sum(int(np.sum(ticket_masks[key])) for key in keys)
        if kept == size:
            return  # nothing pruned: the dense rewind point
        rng = np.random.default_rng(self.seed(config, round_))
        saliency.prune_at_init(
            model,
            self.make_score(batch),
            (size - kept) / size,  # prune_count gives back `size - kept` exactly
            scope="global",
            structure=config.structure,
            exclude=config.exclude,
            rng=rng,
        )


def _pooled_keys(model, exclude):
    """The kernel keys global pruning pools: those not excluded."""
    return list(Targets(exclude=exclude, scope="global").resolve(model).rates)


@ARMS.register("snip")
class SnipAtInit(AtInit):
    """SNIP at initialisation (Lee et al., ICLR 2019) on a batch of training data."""

    label = "SNIP"
    seed_key = 5
    score_class = saliency.Snip


@ARMS.register("grasp")
class GraspAtInit(AtInit):
    """GraSP at initialisation (Wang et al., ICLR 2020) on a batch of training data."""

    label = "GraSP"
    seed_key = 6
    score_class = saliency.GraSP


@ARMS.register("synflow")
class SynFlowAtInit(AtInit):
    """SynFlow at initialisation (Tanaka et al., NeurIPS 2020): data-free, 100 steps."""

    label = "SynFlow"
    seed_key = 7
    score_class = saliency.SynFlow
    data_free = True


#: The arms `ExperimentConfig.controls` accepts.
CONTROLS = tuple(name for name in ARMS.names() if name != "ticket")


def schedule(config):
    """The jobs of a run in order: `(arm name, round)` pairs.

    Round 0 trains the dense network; every later round trains the ticket,
    then each control of `config.controls` (only at `config.control_rounds`
    when given).

    Example:

    ```python
    list(schedule(preset("lenet", rounds=1, controls=("reinit",))))
    # [('ticket', 0), ('ticket', 1), ('reinit', 1)]
    ```
    """
    for round_ in range(config.rounds + 1):
        yield "ticket", round_
        if round_ > 0 and (not config.control_rounds or round_ in config.control_rounds):
            for name in config.controls:
                yield name, round_
