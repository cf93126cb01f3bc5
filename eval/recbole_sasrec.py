"""SASRec baseline trained through RecBole 1.2.1 on exactly our leave-one-out split.

Everything RecBole-specific lives in this module:

* The split is exported as RecBole *benchmark* atomic files (``<ds>.train.inter``,
  ``<ds>.valid.inter``, ``<ds>.test.inter``). In benchmark mode RecBole's sequential dataset does
  no augmentation of its own: each row already carries ``item_id_list`` (the history, truncated
  to the most recent ``max_seq_length`` items) and ``item_id`` (the next item). We therefore
  write every training prefix of ``s[:-2]``, one validation row ``(s[:-2] → s[-2])`` and one test
  row ``(s[:-1] → s[-1])`` per user, which is what RecBole's own leave-one-out augmentation
  would produce. A ``<ds>.item`` file lists every catalogue item so that items never seen in
  training (cold targets) still receive RecBole ids and scores.
* After loading, :func:`verify_recbole_split` checks that RecBole's test users, histories and
  targets are ours, row for row.
* RecBole side effects are confined to :func:`_recbole_sandbox`: it reads ``sys.argv``, sets
  ``CUDA_VISIBLE_DEVICES``, logs to the root logger, opens a TensorBoard writer in the working
  directory and emits pandas warnings. Its checkpoints are pickles read back with
  ``torch.load``; instead the trainer here keeps the best weights in memory (and we store them as
  safetensors), so no pickle is ever written or loaded.
* Scores for our test users come from ``model.full_sort_predict``; our own code ranks them and
  computes every metric, identically to the other systems.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from eval.config import SASRecConfig
from recdata.errors import DataError
from recdata.io import save_tensors, write_text
from recdata.runtime import progress
from recdata.split import SequentialSplit
from recdata.topk import top_k

logger = logging.getLogger(__name__)

DATASET = "mmqrec"
USER_FIELD = "user_id"
ITEM_FIELD = "item_id"
LIST_FIELD = "item_id_list"


# --------------------------------------------------------------------------- export


def _row(user: int, history: np.ndarray, target: int, max_len: int) -> str:
    recent = history[-max_len:]
    return f"{user}\t{' '.join(map(str, recent.tolist()))}\t{int(target)}"


def export_atomic_files(
    *, split: SequentialSplit, data_path: Path, max_seq_length: int, max_train_prefixes: int = 0
) -> dict[str, int]:
    """Write ``data_path/<ds>/<ds>.{train,valid,test}.inter`` and ``<ds>.item``.

    Tokens are our integer indices written as strings (user_idx, item_idx); with
    ``max_train_prefixes`` > 0 only each user's most recent training prefixes are written.
    Returns row counts.
    """
    folder = Path(data_path) / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    header = f"{USER_FIELD}:token\t{LIST_FIELD}:token_seq\t{ITEM_FIELD}:token"
    train, valid, test = [header], [header], [header]
    for user, seq in enumerate(split.sequences):
        history = seq[:-2]
        first = 1 if max_train_prefixes <= 0 else max(1, len(history) - max_train_prefixes)
        for j in range(first, len(history)):
            train.append(_row(user, history[:j], history[j], max_seq_length))
        valid.append(_row(user, seq[:-2], seq[-2], max_seq_length))
        test.append(_row(user, seq[:-1], seq[-1], max_seq_length))
    if len(train) == 1:
        raise DataError("no training prefixes: every user's training sequence has one item")
    for name, lines in (("train", train), ("valid", valid), ("test", test)):
        write_text(folder / f"{DATASET}.{name}.inter", "\n".join(lines) + "\n")
    items = [f"{ITEM_FIELD}:token"] + [str(i) for i in range(split.n_items)]
    write_text(folder / f"{DATASET}.item", "\n".join(items) + "\n")
    return {"train_rows": len(train) - 1, "valid_rows": len(valid) - 1, "test_rows": len(test) - 1}


# --------------------------------------------------------------------------- RecBole sandbox


class _NullWriter:
    """Stands in for RecBole's TensorBoard SummaryWriter (which writes into the cwd)."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add_hparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _BelowWarning(logging.Filter):
    """Drops the INFO/DEBUG records RecBole logs on the root logger (children are untouched)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def _numpy2_aliases() -> None:
    """RecBole 1.2.1's ``Config`` re-creates ``np.float`` and friends from ``np.float_``,
    ``np.complex_`` and ``np.unicode_``, spellings NumPy 2 removed: put them back so RecBole
    runs beside NumPy 2 too (a no-op on NumPy 1)."""
    for old, new in (("float_", "float64"), ("complex_", "complex128"), ("unicode_", "str_")):
        if old not in np.__dict__:
            setattr(np, old, getattr(np, new))


@contextlib.contextmanager
def _recbole_sandbox() -> Iterator[None]:
    """Contain RecBole's process-wide side effects for the duration of a call."""
    import recbole.trainer.trainer as rb_trainer

    _numpy2_aliases()
    saved_argv = sys.argv
    saved_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    root = logging.getLogger()
    quiet = _BelowWarning()
    saved_tensorboard = rb_trainer.get_tensorboard
    # RecBole parses "--key=value" arguments of the host program as its own config.
    sys.argv = sys.argv[:1]
    # A filter on the root logger sees only records logged on root itself, which is where
    # RecBole logs; our own module loggers propagate past it.
    root.addFilter(quiet)
    rb_trainer.get_tensorboard = lambda _logger: _NullWriter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.argv = saved_argv
        root.removeFilter(quiet)
        rb_trainer.get_tensorboard = saved_tensorboard
        if saved_cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved_cuda


def _trainer_class() -> type:
    from recbole.trainer import Trainer

    class InMemoryBestTrainer(Trainer):
        """RecBole's trainer, keeping the best validation weights in memory, not in a pickle."""

        best_state: dict[str, Any] | None = None
        best_epoch: int = -1

        def _save_checkpoint(self, epoch: int, verbose: bool = True, **kwargs: Any) -> None:
            self.best_state = {
                name: tensor.detach().cpu().clone()
                for name, tensor in self.model.state_dict().items()
            }
            self.best_epoch = int(epoch)

    return InMemoryBestTrainer


def _recbole_config(
    *, cfg: SASRecConfig, data_path: Path, work_dir: Path, ks: Sequence[int], seed: int,
    device: str,
) -> Any:
    from recbole.config import Config

    config_dict = {
        "data_path": str(data_path),
        "checkpoint_dir": str(work_dir / "checkpoints"),
        "benchmark_filename": ["train", "valid", "test"],
        "USER_ID_FIELD": USER_FIELD,
        "ITEM_ID_FIELD": ITEM_FIELD,
        "load_col": {"inter": [USER_FIELD, LIST_FIELD, ITEM_FIELD], "item": [ITEM_FIELD]},
        # item_id_list and item_id must share one id space.
        "alias_of_item_id": [LIST_FIELD],
        "MAX_ITEM_LIST_LENGTH": cfg.max_seq_length,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "hidden_size": cfg.hidden_size,
        "inner_size": cfg.inner_size,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attn_dropout_prob": cfg.attn_dropout,
        "epochs": cfg.epochs,
        "train_batch_size": cfg.train_batch_size,
        "eval_batch_size": cfg.eval_batch_size,
        "learning_rate": cfg.learning_rate,
        "weight_decay": cfg.weight_decay,
        "stopping_step": cfg.stopping_step,
        "eval_args": {"mode": "full", "order": "TO", "split": {"LS": "valid_and_test"},
                      "group_by": "user"},
        "metrics": ["Recall", "NDCG", "MRR"],
        "topk": list(ks),
        "valid_metric": cfg.valid_metric,
        "metric_decimal_place": 8,
        "seed": seed,
        "reproducibility": True,
        "show_progress": False,
        "worker": 0,
        "log_wandb": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "use_gpu": device.startswith("cuda"),
        # RecBole writes gpu_id into CUDA_VISIBLE_DEVICES; passing the current value (CUDA is
        # initialised just below, before RecBole looks) leaves device visibility unchanged.
        "gpu_id": os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
        "state": "WARNING",
    }
    import torch

    torch.cuda.is_available()
    config = Config(model="SASRec", dataset=DATASET, config_dict=config_dict)
    # Our device choice wins over RecBole's own guess.
    config["device"] = torch.device(device)
    return config


# --------------------------------------------------------------------------- id maps and checks


def _token_ids(dataset: Any, field: str, n: int, what: str) -> np.ndarray:
    """RecBole internal id of each of our indices 0..n-1 (tokens are our indices as strings)."""
    token_to_id = dataset.field2token_id[field]
    missing = [i for i in range(n) if str(i) not in token_to_id]
    if missing:
        raise DataError(f"RecBole lost {len(missing)} {what}(s), e.g. index {missing[0]}")
    return np.array([token_to_id[str(i)] for i in range(n)], dtype=np.int64)


def _ours(dataset: Any, field: str, ids: np.ndarray) -> np.ndarray:
    tokens = dataset.field2id_token[field][np.asarray(ids)]
    return np.array([int(t) for t in tokens], dtype=np.int64)


def verify_recbole_split(
    *, dataset: Any, test_dataset: Any, split: SequentialSplit, max_seq_length: int
) -> dict[str, int]:
    """Check that RecBole's test rows are exactly our test users, histories and targets."""
    feat = test_dataset.inter_feat
    users = _ours(dataset, USER_FIELD, feat[USER_FIELD].numpy())
    targets = _ours(dataset, ITEM_FIELD, feat[ITEM_FIELD].numpy())
    lists = feat[LIST_FIELD].numpy()
    lengths = feat["item_length"].numpy()
    if len(users) != split.n_users or sorted(users.tolist()) != list(range(split.n_users)):
        raise DataError(
            f"RecBole's test set has {len(users)} rows / {len(set(users.tolist()))} users; "
            f"ours has {split.n_users} users"
        )
    expected_targets = split.test_targets
    if not np.array_equal(targets, expected_targets[users]):
        bad = int(np.flatnonzero(targets != expected_targets[users])[0])
        raise DataError(f"RecBole's test target differs from ours for user_idx {users[bad]}")
    for row, user in enumerate(users):
        history = _ours(dataset, ITEM_FIELD, lists[row, : lengths[row]])
        expected = split.sequences[user][:-1][-max_seq_length:]
        if not np.array_equal(history, expected):
            raise DataError(f"RecBole's test history differs from ours for user_idx {user}")
    return {"test_users": int(len(users)), "test_rows_checked": int(len(users))}


# --------------------------------------------------------------------------- scoring


def _score_users(
    *, model: Any, histories: Sequence[np.ndarray], item_map: np.ndarray, max_seq_length: int,
    batch_size: int, device: str, depth: int, candidates: int = 0, desc: str = "sasrec scoring",
) -> tuple[dict[bool, tuple[np.ndarray, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """Full-catalogue scores for each history → our top-``depth`` ranked lists under both
    protocols, ``{exclude_history: (ranked, scores)}``, from one pass of the model; and, with
    ``candidates`` > 0, the top-``candidates`` items with history kept and their log-softmax
    scores (what ``sasrec_priors`` re-orders, as the retriever's priors re-order its beam)."""
    import torch
    from recbole.data.interaction import Interaction

    model.eval()
    parts: dict[bool, tuple[list[np.ndarray], list[np.ndarray]]] = {False: ([], []), True: ([], [])}
    cand_items: list[np.ndarray] = []
    cand_scores: list[np.ndarray] = []
    starts = range(0, len(histories), batch_size)
    for start in progress(starts, desc=desc, total=len(starts)):
        batch = histories[start : start + batch_size]
        seq = np.zeros((len(batch), max_seq_length), dtype=np.int64)
        lengths = np.zeros(len(batch), dtype=np.int64)
        for row, hist in enumerate(batch):
            recent = item_map[np.asarray(hist[-max_seq_length:], dtype=np.int64)]
            # RecBole pads at the end and reads the state at position length-1.
            seq[row, : len(recent)] = recent
            lengths[row] = len(recent)
        inter = Interaction(
            {model.ITEM_SEQ: torch.from_numpy(seq), model.ITEM_SEQ_LEN: torch.from_numpy(lengths)}
        ).to(device)
        with torch.no_grad():
            full = model.full_sort_predict(inter).float().cpu()
        scores = full[:, item_map].numpy()
        users = np.arange(start, start + len(batch))
        if depth > 0:
            for exclude_history, (ranked_parts, score_parts) in parts.items():
                exclude = [np.asarray(h, dtype=np.int64) for h in batch] if exclude_history else None
                items, top_scores = top_k(scores, k=depth, exclude=exclude, users=users)
                ranked_parts.append(items)
                score_parts.append(top_scores)
        if candidates > 0:
            # Log-probabilities over the catalogue (RecBole's padding row left out).
            logp = scores - torch.logsumexp(torch.from_numpy(scores), dim=1, keepdim=True).numpy()
            items, top_scores = top_k(logp, k=candidates, users=users)
            cand_items.append(items)
            cand_scores.append(top_scores.astype(np.float32))
    lists = ({flag: (np.concatenate(r), np.concatenate(sc)) for flag, (r, sc) in parts.items()}
             if depth > 0 else {})
    cands = ((np.concatenate(cand_items), np.concatenate(cand_scores)) if candidates > 0
             else (np.zeros((len(histories), 0), np.int64), np.zeros((len(histories), 0))))
    return lists, cands


CANDIDATES = 50
"""Candidates per validation and test user kept for ``sasrec_priors`` (the retriever's
``candidates_n`` in every shipped config)."""
CANDIDATES_FILE = "candidates.safetensors"
"""Those candidates, beside the weights: ``{valid,test}_{items,scores}``."""


def train_and_rank(
    *,
    split: SequentialSplit,
    cfg: SASRecConfig,
    work_dir: Path,
    ks: Sequence[int],
    depth: int,
    seed: int,
    device: str,
) -> tuple[dict[bool, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Train SASRec on the split and rank the full catalogue for every test user.

    Writes RecBole's inputs under ``work_dir/recbole_data`` and the best weights to
    ``work_dir/model.safetensors``. Returns ``({exclude_history: (ranked [U, depth], scores
    [U, depth])}, info)`` with lists under both protocols, from the same model;
    ``info`` holds RecBole's own test metrics as a cross-check and the split verification.
    """
    import torch

    work_dir = Path(work_dir)
    data_path = work_dir / "recbole_data"
    if data_path.exists():
        shutil.rmtree(data_path)
    checkpoints = work_dir / "checkpoints"
    if checkpoints.exists():
        # RecBole would unpickle a cached dataset/dataloader found here; never reuse one.
        shutil.rmtree(checkpoints)
    t0 = time.perf_counter()
    saved_threads = torch.get_num_threads()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    try:
        return _train_and_rank(
            split=split, cfg=cfg, work_dir=work_dir, data_path=data_path, checkpoints=checkpoints,
            ks=ks, depth=depth, seed=seed, device=device, t0=t0,
        )
    finally:
        torch.set_num_threads(saved_threads)


def _train_and_rank(
    *, split: SequentialSplit, cfg: SASRecConfig, work_dir: Path, data_path: Path,
    checkpoints: Path, ks: Sequence[int], depth: int, seed: int, device: str, t0: float,
) -> tuple[dict[bool, tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    import torch

    rows = export_atomic_files(split=split, data_path=data_path, max_seq_length=cfg.max_seq_length,
                               max_train_prefixes=cfg.max_train_prefixes)

    with _recbole_sandbox():
        from recbole.data import create_dataset, data_preparation
        from recbole.model.sequential_recommender import SASRec
        from recbole.utils import init_seed

        config = _recbole_config(
            cfg=cfg, data_path=data_path, work_dir=work_dir, ks=ks, seed=seed, device=device
        )
        init_seed(seed, True)
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        check = verify_recbole_split(
            dataset=dataset, test_dataset=test_data._dataset, split=split,
            max_seq_length=cfg.max_seq_length,
        )
        item_map = _token_ids(dataset, ITEM_FIELD, split.n_items, "item")
        init_seed(seed, True)
        model = SASRec(config, train_data._dataset).to(config["device"])
        trainer = _trainer_class()(config, model)
        t_train = time.perf_counter()
        epoch_log: list[dict[str, float]] = []

        def on_epoch(epoch: int, valid_score: float) -> None:
            epoch_log.append({"epoch": epoch, "valid": float(valid_score),
                              "loss": float(trainer.train_loss_dict.get(epoch, float("nan"))),
                              "seconds": round(time.perf_counter() - t_train, 2)})
            logger.info("sasrec epoch %d: loss %.4f, valid %s %.4f (%.0fs)", epoch,
                        epoch_log[-1]["loss"], cfg.valid_metric, valid_score,
                        epoch_log[-1]["seconds"])

        best_valid_score, best_valid = trainer.fit(
            train_data, valid_data, verbose=False, saved=True, show_progress=False,
            callback_fn=on_epoch,
        )
        train_seconds = time.perf_counter() - t_train
        if trainer.best_state is None:
            raise DataError("SASRec training produced no model (epochs must be ≥ 1)")
        model.load_state_dict(trainer.best_state)
        recbole_test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    shutil.rmtree(checkpoints, ignore_errors=True)

    save_tensors(work_dir / "model.safetensors", trainer.best_state,
                 metadata={"model": "SASRec", "config": str(asdict(cfg))})
    t_score = time.perf_counter()
    score = dict(model=model, item_map=item_map, max_seq_length=cfg.max_seq_length,
                 batch_size=cfg.eval_batch_size, device=str(config["device"]),
                 candidates=CANDIDATES)
    lists, test_cands = _score_users(histories=split.test_inputs, depth=depth, **score)
    _, valid_cands = _score_users(histories=split.valid_inputs, depth=0,
                                  desc="sasrec validation scoring", **score)
    save_tensors(work_dir / CANDIDATES_FILE, {
        "valid_items": valid_cands[0], "valid_scores": valid_cands[1],
        "test_items": test_cands[0], "test_scores": test_cands[1]})
    info = {
        "recbole_version": _recbole_version(),
        "rows": rows,
        "split_check": check,
        "best_epoch": trainer.best_epoch,
        "epochs_run": len(trainer.train_loss_dict),
        "epoch_log": epoch_log,
        "best_valid_score": float(best_valid_score),
        "recbole_valid": {k: float(v) for k, v in (best_valid or {}).items()},
        "recbole_test": {k: float(v) for k, v in (recbole_test or {}).items()},
        "train_seconds": round(train_seconds, 2),
        "score_seconds": round(time.perf_counter() - t_score, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
        "device": str(config["device"]),
        "threads": torch.get_num_threads(),
    }
    logger.info("sasrec: best epoch %d of %d, RecBole test %s", info["best_epoch"],
                info["epochs_run"], info["recbole_test"])
    return lists, info


def _recbole_version() -> str:
    from importlib.metadata import version

    return version("recbole")
