"""Temporal-sets data: every user is a time-ordered sequence of events, each a set of labels.

Protocol (DNNTSP): for every user the last set is the target and the preceding sets (the last ``look_back``) are
the history; training users also give one example per prefix of their sequence (targets 2, 3, ..., last). The
split is by user. The label vocabulary comes from the training users only; labels unseen in training stay in the
targets as ``n_unseen``: they count as misses in every metric (ranking metrics, F1, micro-AUC; see metrics.py).
"""
from __future__ import annotations  # X | None annotations on Python 3.9
import csv
import json
import math
import numbers
import random
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

__all__ = ["Example", "TemporalSets", "collate", "load_temporal_sets_csv", "load_temporal_sets_json",
           "past_count_matrix"]

NUM_GAPS = 32
NUM_AMOUNTS = 16


@dataclass
class Example:
    history: list  # the last look_back events, most recent first: lists of vocabulary ids
    gaps: list  # time-gap bucket of each history event (>= 1)
    target: list  # vocabulary ids of the target set
    n_unseen: int = 0  # target labels outside the vocabulary
    amounts: list | None = None  # per history event, {vocabulary id: amount bucket}
    past_counts: dict = field(default_factory=dict)  # vocabulary id -> count over the whole past (baseline)
    user: str = ""


@dataclass
class TemporalSets:
    train: list
    validate: list
    test: list
    vocab: list  # vocabulary id -> original label
    popularity: torch.Tensor  # label counts over the training users' events
    look_back: int
    has_amounts: bool = False
    train_sequences: dict = field(default_factory=dict)  # training user -> events as sorted vocabulary-id lists

    @property
    def num_labels(self) -> int:
        return len(self.vocab)


def _log2_bucket(v: float, buckets: int) -> int:
    """1 + floor(log2(1 + max(v, 0))), capped at buckets - 1 (0 is the padding bucket); capped before int(): v may be
    inf (times far apart, an event's summed amounts)."""
    return 1 + int(min(buckets - 2, math.log2(1 + max(v, 0.0))))


def gap_bucket(delta: float) -> int:
    return _log2_bucket(delta, NUM_GAPS)


def amount_bucket(a: float) -> int:
    return _log2_bucket(a, NUM_AMOUNTS)


def _build(splits: dict, look_back: int, times: dict | None = None, amounts: dict | None = None,
           fn: str = "temporal sets") -> TemporalSets:
    """splits: {"train"|"validate"|"test": {user: [[label, ...], ...]}} (time-ordered); times/amounts optional
    {user: [t, ...]} / {user: [{label: amount}, ...]}."""
    _check_look_back(fn, look_back)
    for name in ("train", "validate", "test"):
        users = splits[name]
        if not isinstance(users, dict):
            raise ValueError(f"{fn}: split {name!r} must map each user to a list of events (lists of labels), got "
                             f"{type(users).__name__}")
        for user, seq in users.items():
            if not isinstance(seq, list):
                raise ValueError(f"{fn}: split {name!r}, user {user!r}: expected a list of events (lists of labels), "
                                 f"got {type(seq).__name__}")
            for j, event in enumerate(seq):
                if not isinstance(event, list):
                    raise ValueError(f"{fn}: split {name!r}, user {user!r}, event {j}: expected a list of labels, got "
                                     f"{type(event).__name__} {event!r:.40}")
                if not event:  # as a target it would score 0 whatever the model; in a history, a slot of nothing
                    raise ValueError(f"{fn}: split {name!r}, user {user!r}, event {j} is empty: an event must hold "
                                     "at least one label")
                for v in event:  # labels are dictionary keys: a list would not hash, None is no label
                    if not isinstance(v, (str, int)) or isinstance(v, bool):
                        raise ValueError(f"{fn}: split {name!r}, user {user!r}: labels must be strings or "
                                         f"integers, got {v!r}")
    counts = Counter(lab for seq in splits["train"].values() for event in seq for lab in set(event))
    vocab = sorted(counts, key=lambda v: (-counts[v], str(v)))
    index = {v: i for i, v in enumerate(vocab)}
    popularity = torch.tensor([counts[v] for v in vocab], dtype=torch.long)

    train_sequences = {}

    def examples(users: dict, every_prefix: bool) -> list:
        out = []
        for user, seq in users.items():
            ids = [sorted({index[v] for v in event if v in index}) for event in seq]
            if every_prefix:
                train_sequences[str(user)] = ids
            targets = range(1, len(seq)) if every_prefix else ([len(seq) - 1] if len(seq) > 1 else [])
            past = Counter()
            for t in range(1, len(seq)):
                past.update(ids[t - 1])
                if t not in targets:
                    continue
                lo = max(0, t - look_back)
                hist = [ids[j] for j in range(t - 1, lo - 1, -1)]
                if times is not None:
                    gaps = [gap_bucket(times[user][t] - times[user][j]) for j in range(t - 1, lo - 1, -1)]
                else:
                    gaps = [gap_bucket(t - j) for j in range(t - 1, lo - 1, -1)]
                amts = None
                if amounts is not None:
                    amts = [{index[v]: amount_bucket(a) for v, a in amounts[user][j].items() if v in index}
                            for j in range(t - 1, lo - 1, -1)]
                target = set(seq[t])
                out.append(Example(hist, gaps, sorted({index[v] for v in target if v in index}),
                                   sum(v not in index for v in target), amts, dict(past), str(user)))
        return out

    train = examples(splits["train"], True)
    return TemporalSets(train, examples(splits["validate"], False), examples(splits["test"], False), vocab,
                        popularity, look_back, amounts is not None, train_sequences)


def load_temporal_sets_json(path: str, look_back: int = 3) -> TemporalSets:
    """The DNNTSP JSON format: ``{"train"|"validate"|"test": {user: [[label, ...], ...]}}``."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # JSON is UTF-8; -sig: a byte-order mark is skipped
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"load_temporal_sets_json: {path} is not UTF-8 JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"load_temporal_sets_json: {path}: expected an object with the splits train, validate, "
                         f"test, got a {type(data).__name__}")
    missing = {"train", "validate", "test"} - set(data)
    if missing:
        raise ValueError(f"load_temporal_sets_json: {path} lacks the split(s) {sorted(missing)}")
    return _build(data, look_back, fn="load_temporal_sets_json")


def _parse_time(s: str) -> tuple:
    """(time, kind): a finite number as it is ("number"), or an ISO date in days since 1970 ("date"; a date
    without a time zone is taken as UTC, so gaps do not depend on the machine's zone or its daylight saving)."""
    try:
        t, kind = float(s), "number"
    except ValueError:
        from datetime import datetime, timezone

        d = datetime.fromisoformat(s)
        t, kind = (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp() / 86400.0, "date"
    if not math.isfinite(t):
        raise ValueError(f"time must be a finite number or an ISO date, got {s!r}")
    return t, kind


def _read_csv_rows(path: str, reader, events) -> bool:
    """load_temporal_sets_csv's rows into events[user][time][label] = summed amount; returns whether the file has
    amounts."""
    time_kind = None  # numbers or dates, not both: a number next to dates would be read as days since 1970
    header = [h.strip().lower() for h in next(reader, [])]
    if header not in (["user", "time", "label"], ["user", "time", "label", "amount"]):
        raise ValueError(f"load_temporal_sets_csv: {path}: expected the header user,time,label[,amount], got "
                         f"{header or 'an empty file'}")
    has_amount = len(header) > 3
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"load_temporal_sets_csv: {path} line {reader.line_num}: expected {len(header)} "
                             f"fields ({','.join(header)}), got {len(row)}: {row}")
        row = [c.strip() for c in row]  # "u1, 5, a" and "u1,5,a" name the same user and label
        try:
            for name, value in zip(("user", "label"), (row[0], row[2])):
                if not value:
                    raise ValueError(f"the {name} is empty")
            amount = float(row[3]) if has_amount and row[3] != "" else 0.0
            if not math.isfinite(amount):  # negative amounts (returns) are data: their bucket is 0's
                raise ValueError(f"amount must be a finite number, got {row[3]!r}")
            t, kind = _parse_time(row[1])
            if time_kind is not None and kind != time_kind:
                raise ValueError(f"time {row[1]!r} is a {kind}, earlier rows' times are {time_kind}s: use "
                                 "one kind of time in a file")
            time_kind = kind
        except ValueError as e:
            raise ValueError(f"load_temporal_sets_csv: {path} line {reader.line_num}: {e}") from None
        d = events[row[0]][t]
        d[row[2]] = d.get(row[2], 0.0) + amount
    return has_amount


def load_temporal_sets_csv(path: str, look_back: int = 3, split=(0.7, 0.1, 0.2), seed: int = 0) -> TemporalSets:
    """A CSV with a header and columns ``user, time, label[, amount]`` (one row per label occurrence; rows of the
    same user and time form one event). Time is a number or an ISO date (gaps in days). Users are split at random
    (seeded) into train / validate / test with the given fractions."""
    split = tuple(split)
    if (len(split) != 3 or not all(isinstance(f, numbers.Real) and not isinstance(f, bool) and 0 <= f <= 1
                                   for f in split) or abs(sum(split) - 1) > 1e-6 or split[0] == 0):
        raise ValueError(f"load_temporal_sets_csv: split must be three fractions (train, validate, test) >= 0 "
                         f"summing to 1, train's positive, got {split}")
    _check_look_back("load_temporal_sets_csv", look_back)  # before reading a large file
    events = defaultdict(lambda: defaultdict(dict))
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Excel's "CSV UTF-8") is skipped
        reader = csv.reader(f)
        try:
            has_amount = _read_csv_rows(path, reader, events)
        except UnicodeDecodeError as e:  # decoded a block at a time: no line number or file offset to give
            raise ValueError(f"load_temporal_sets_csv: {path} is not UTF-8 text (the bytes "
                             f"{e.object[e.start:e.end + 8]!r} do not decode)") from None
        except csv.Error as e:  # e.g. a field longer than the csv module's limit
            raise ValueError(f"load_temporal_sets_csv: {path} line {reader.line_num}: {e}") from None
    users = sorted(events)
    needed = 1 + (split[1] > 0) + (split[2] > 0)
    if len(users) < needed:
        raise ValueError(f"load_temporal_sets_csv: {path} has {len(users)} user(s); the split {split} needs at least "
                         f"{needed} (one per split with a positive fraction)")
    random.Random(seed).shuffle(users)
    # at least one validation and one test user whenever their fraction is positive and there are enough users
    n = len(users)
    n_val = max(int(split[1] * n), int(split[1] > 0 and n >= 3))
    n_test = max(n - int(split[0] * n) - int(split[1] * n), int(n >= 3)) if split[2] > 0 else 0
    n_train = n - n_val - n_test
    parts = {"train": users[:n_train], "validate": users[n_train:n_train + n_val], "test": users[n_train + n_val:]}
    splits, times, amounts = {}, {}, {}
    for name, us in parts.items():
        splits[name] = {}
        for u in us:
            ts = sorted(events[u])
            splits[name][u] = [sorted(events[u][t]) for t in ts]
            times[u] = ts
            amounts[u] = [events[u][t] for t in ts]
    return _build(splits, look_back, times, amounts if has_amount else None, fn="load_temporal_sets_csv")


def _is_int(v) -> bool:
    """An integer (numpy's too), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@contextmanager
def _quiet_sparse_csr():
    """Silences torch's warning that sparse CSR support is beta (the label priors' sparse products go through CSR)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


def _check_look_back(fn: str, look_back) -> None:
    if not _is_int(look_back) or look_back < 1:
        raise ValueError(f"{fn}: look_back must be an int >= 1, got {look_back!r}")


def _check_ids(fn: str, b: int, what: str, ids: list, num_labels: int) -> None:
    """Vocabulary ids must be ints in [0, num_labels): a negative one would index from the end."""
    if len(ids) == 0 or (set(map(type, ids)) == {int} and 0 <= min(ids) and max(ids) < num_labels):
        return  # the loaders' case, at C speed; the scan below names what is wrong
    bad = [i for i in ids if not (_is_int(i) and 0 <= i < num_labels)]
    if bad:
        kinds = sorted({type(i).__name__ for i in bad if not _is_int(i)})
        if kinds:
            raise ValueError(f"{fn}: example {b} has {what} label ids {bad[:5]} of type {', '.join(kinds)}; each must "
                             f"be an int in [0, num_labels = {num_labels})")
        raise ValueError(f"{fn}: example {b} has {what} label ids {bad[:5]} outside [0, num_labels = {num_labels})")


def _is_id_seq(v) -> bool:
    """A list, tuple or 1-D numpy array of ids (None or a bare id would index a whole row or fail deep inside)."""
    return isinstance(v, (list, tuple)) or (type(v).__module__ == "numpy" and getattr(v, "ndim", None) == 1)


def _check_id_list(fn: str, b: int, what: str, ids, num_labels: int) -> None:
    """A list (or tuple, or 1-D numpy array) of vocabulary ids."""
    if not _is_id_seq(ids):
        raise ValueError(f"{fn}: example {b}: {what} must be a list of label ids, got {type(ids).__name__} "
                         f"{ids!r:.40}")
    _check_ids(fn, b, what, ids, num_labels)


def collate(batch: list, num_labels: int, look_back: int, with_amounts: bool = False):
    """history bool [B, J, C], gap int64 [B, J] (0 = no event), amount int64 [B, J, C] or None, target bool [B, C]."""
    B, J = len(batch), look_back
    for b, ex in enumerate(batch):
        if not isinstance(ex.history, (list, tuple)) or not isinstance(ex.gaps, (list, tuple)):
            raise ValueError(f"collate: example {b}: history must be a list of events (lists of label ids) and gaps a "
                             f"list of ints, got {type(ex.history).__name__} and {type(ex.gaps).__name__}")
        if len(ex.history) > J or len(ex.gaps) != len(ex.history):
            raise ValueError(f"collate: example {b} has {len(ex.history)} history events and {len(ex.gaps)} gaps; "
                             f"expected one gap per event and at most look_back = {J} events")
        if not all(_is_int(g) and 1 <= g < NUM_GAPS for g in ex.gaps):
            raise ValueError(f"collate: example {b} has gap buckets {ex.gaps}; each must be an int in [1, {NUM_GAPS})")
        if not all(_is_id_seq(ids) for ids in ex.history):
            raise ValueError(f"collate: example {b}: each history event must be a list of label ids, got "
                             f"{ex.history!r:.60}")
        _check_ids("collate", b, "history", [i for ids in ex.history for i in ids], num_labels)
        _check_id_list("collate", b, "target", ex.target, num_labels)
        if with_amounts and ex.amounts is not None:
            if not isinstance(ex.amounts, (list, tuple)) or not all(isinstance(a, Mapping) for a in ex.amounts):
                raise ValueError(f"collate: example {b}: amounts must be a list of dicts {{label id: amount bucket}}, "
                                 f"one per history event, got {ex.amounts!r:.60}")
            if len(ex.amounts) != len(ex.history):
                raise ValueError(f"collate: example {b} has {len(ex.amounts)} amount maps for {len(ex.history)} events")
            _check_ids("collate", b, "amounts", [i for a in ex.amounts for i in a], num_labels)
            bad = [v for a in ex.amounts for v in a.values() if not (_is_int(v) and 0 <= v < NUM_AMOUNTS)]
            if bad:
                raise ValueError(f"collate: example {b} has amount buckets {bad[:5]}; each must be an int in "
                                 f"[0, {NUM_AMOUNTS})")
    history = torch.zeros(B, J, num_labels, dtype=torch.bool)
    gap = torch.zeros(B, J, dtype=torch.long)
    amount = torch.zeros(B, J, num_labels, dtype=torch.long) if with_amounts else None
    target = torch.zeros(B, num_labels, dtype=torch.bool)
    for b, ex in enumerate(batch):
        for j, (ids, g) in enumerate(zip(ex.history, ex.gaps)):
            history[b, j, ids] = True
            gap[b, j] = g
            if amount is not None and ex.amounts is not None:
                for i, a in ex.amounts[j].items():
                    amount[b, j, i] = a
        target[b, ex.target] = True
    return history, gap, amount, target


def past_count_matrix(batch: list, num_labels: int, fn: str = "past_count_matrix") -> torch.Tensor:
    """float32 [B, C]: how many of the example's past events (its whole past, not only the look-back window)
    contained each label. ``fn`` names the caller in the errors for ids outside [0, num_labels) or counts that are
    not finite numbers >= 0."""
    counts = torch.zeros(len(batch), num_labels)
    for b, ex in enumerate(batch):
        ids = _checked_past_ids(fn, b, ex, num_labels)
        if ids:
            values = list(ex.past_counts.values())
            bad = [v for v in values
                   if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v < math.inf)]
            if bad:
                raise ValueError(f"{fn}: example {b}: counts must be finite numbers >= 0, got {bad[:5]}")
            counts[b, ids] = torch.tensor(values, dtype=torch.float32)
    return counts


def _checked_past_ids(fn: str, b: int, ex, num_labels: int) -> list:
    """The ids of ``ex.past_counts`` (a dict {label id: count}), each an int in [0, num_labels)."""
    if not isinstance(ex.past_counts, Mapping):
        raise ValueError(f"{fn}: example {b}: past_counts must be a dict {{label id: count}}, got "
                         f"{type(ex.past_counts).__name__}")
    ids = list(ex.past_counts)
    _check_ids(fn, b, "past_counts", ids, num_labels)
    return ids
