"""Reading a dataset for training: each rank its part of every batch, a fresh order every
epoch, augmentation on the fly, batches prefetched. The trainer sees only Dataset's interface.

`train_batches(seed, steps, batch)` takes the group's global batch and a seed that is the same
on every rank of the group (lth_mpi.seeds keys it by cell and epoch, never by rank). How the
G ranks of a group (`shard=(index, G)`) share the training split depends on where it lives:
  * in memory (IDX files, small converted files): every rank holds the whole split and draws
    the same permutation from the seed; global batch i is cut into G equal slices and rank
    `index` takes slice `index`, augmented with the draws of the whole batch. A group of G
    therefore trains on exactly the batches one rank would, which is what makes a cell's
    numbers independent of the group size (up to float summation order; docs/design.md).
  * streamed from a converted file too large for memory: the training rows are cut into
    pieces of `read_rows` consecutive rows; a fixed seeded permutation lays the pieces out in
    a row, and that row is cut into G parts whose sizes differ by at most one example. A rank
    owns one part (disjoint, covering the set, each a mix of the whole file) and every epoch
    shuffles the order of its pieces, reads them a window (about `shuffle_buffer` examples) at
    a time in contiguous reads, and shuffles each window; leftovers carry over. Only this
    rank's rows are ever read, and a node's page cache holds its ranks' parts; the batches
    then depend on G (the shard index is mixed into the seed).
  * the test rows are cut into G contiguous blocks, read in order, in both modes; so are the
    validation rows, the last `validation_examples` rows of the training split, which are
    never trained on.
"""
from __future__ import annotations

import abc

import h5py
import numpy as np

from . import augment as augment_mod
from . import h5format
from .prefetch import Stats, prefetch

IN_MEMORY_AUTO_BYTES = 1 << 30     # in_memory: auto holds a rank's part in memory up to 1 GiB


def owned_pieces(n: int, read_rows: int, shard=(0, 1), seed: int = 0) -> list[tuple[int, int]]:
    """This shard's training rows as sorted (start, stop) ranges (see the module doc)."""
    index, count = shard
    starts = range(0, n, read_rows)
    order = np.random.default_rng(seed).permutation(len(starts))
    lo, hi = index * n // count, (index + 1) * n // count
    pieces, pos = [], 0
    for c in order:
        a = starts[c]
        length = min(read_rows, n - a)
        s, e = max(pos, lo), min(pos + length, hi)
        if s < e:
            pieces.append((a + s - pos, a + e - pos))
        pos += length
    return sorted(pieces)


def block(n: int, shard=(0, 1)) -> tuple[int, int]:
    """This rank's contiguous block of n evaluation rows (the group's blocks cover them once)."""
    index, count = shard
    return index * n // count, (index + 1) * n // count


def _seeds(seed: int, index: int):
    """Three independent generators (piece order, window order, augmentation) per rank and
    epoch; the shard index is mixed in, so equal seeds on two ranks still differ."""
    seq = np.random.SeedSequence([seed & (2 ** 64 - 1), index])
    return [np.random.default_rng(s) for s in seq.spawn(3)]


class Dataset(abc.ABC):
    """Batches of one rank's shard. Subclasses say which rows the rank has and how to read
    them; the order, the windows, augmentation and prefetching live here."""

    def __init__(self, *, num_classes, mean, std, input_shape, train_total, test_total,
                 val_total=0, shard=(0, 1), augment=False, pad=None, flip=True, prefetch=4,
                 shuffle_buffer=None, class_names=None):
        check_options(dict(augment=augment, pad=pad, flip=flip, prefetch=prefetch))
        self.num_classes = int(num_classes)
        self.mean, self.std = tuple(mean), tuple(std)
        self.input_shape = tuple(input_shape)
        self.train_total, self.test_total = int(train_total), int(test_total)
        self.val_total = int(val_total)   # held out of the training split, never trained on
        self.shard = tuple(shard)
        self.augment, self.flip, self.prefetch = bool(augment), bool(flip), int(prefetch)
        self.pad = augment_mod.default_pad(self.input_shape[0]) if pad is None else int(pad)
        self.shuffle_buffer = shuffle_buffer
        self.class_names = class_names
        self.stats = Stats()

    # --- what subclasses provide ---------------------------------------------------------
    @abc.abstractmethod
    def train_pieces(self) -> list[tuple[int, int]]:
        """This rank's training rows, as sorted (start, stop) ranges."""

    @abc.abstractmethod
    def read_train(self, pieces) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of the given sorted ranges, concatenated."""

    @abc.abstractmethod
    def test_pieces(self) -> list[tuple[int, int]]:
        """This rank's test rows, as (start, stop) ranges."""

    @abc.abstractmethod
    def read_test(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of test rows [start, stop)."""

    @abc.abstractmethod
    def val_pieces(self) -> list[tuple[int, int]]:
        """This rank's validation rows, as (start, stop) ranges."""

    @abc.abstractmethod
    def read_val(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of validation rows [start, stop)."""

    @property
    def train_count(self) -> int:
        return sum(b - a for a, b in self.train_pieces())

    @property
    def test_count(self) -> int:
        return sum(b - a for a, b in self.test_pieces())

    @property
    def val_count(self) -> int:
        return sum(b - a for a, b in self.val_pieces())

    # --- the trainer's interface ---------------------------------------------------------
    def train_batches(self, seed: int, steps: int, batch: int):
        """This rank's part of exactly `steps` global batches of `batch` examples (batch / G
        each), each example at most once per call, in an order (and augmentation) fresh for
        every seed. `seed` must be the same on every rank of the group."""
        local = batch // self.shard[1]
        if steps * local > self.train_count:
            raise ValueError(f"dataset: {steps} steps of {local} need {steps * local} examples, "
                             f"this shard has {self.train_count}")
        return self._maybe_prefetch(self._train_stream(seed, steps, batch))

    def test_batches(self, batch: int):
        """This shard's test rows in order; the shards of a group cover the test set once."""
        return self._maybe_prefetch(self._eval_stream(self.test_pieces(), self.read_test, batch))

    def val_batches(self, batch: int):
        """This rank's block of the validation rows, in order, like the test set."""
        return self._maybe_prefetch(self._eval_stream(self.val_pieces(), self.read_val, batch))

    # --- internals ------------------------------------------------------------------------
    def _maybe_prefetch(self, stream):
        return prefetch(stream, self.prefetch, self.stats) if self.prefetch > 0 else stream

    def _windows(self, rng):
        """The shard's pieces in a random order, grouped into windows of about
        shuffle_buffer examples (one window: the whole shard)."""
        pieces = self.train_pieces()
        limit = self.shuffle_buffer or self.train_count
        window, size = [], 0
        for i in rng.permutation(len(pieces)):
            window.append(pieces[i])
            size += pieces[i][1] - pieces[i][0]
            if size >= limit:
                yield sorted(window)
                window, size = [], 0
        if window:
            yield sorted(window)

    def _train_stream(self, seed, steps, batch):
        batch //= self.shard[1]                # streamed: batches of this rank's own rows
        order_rng, mix_rng, aug_rng = _seeds(seed, self.shard[0])
        carry = None
        emitted = 0
        for window in self._windows(order_rng):
            x, y = self.read_train(window)
            if carry is not None:
                x, y = np.concatenate([carry[0], x]), np.concatenate([carry[1], y])
            perm = mix_rng.permutation(len(x))
            full = len(x) // batch
            for i in range(full):
                idx = np.sort(perm[i * batch:(i + 1) * batch])   # sorted: a faster gather
                xb = x[idx]
                if self.augment:
                    xb = augment_mod.random_crop_flip(xb, aug_rng, self.pad, self.flip)
                yield xb, y[idx]
                emitted += 1
                if emitted == steps:
                    return
            rest = np.sort(perm[full * batch:])
            carry = (x[rest], y[rest])

    @staticmethod
    def _eval_stream(pieces, read, batch):
        for a, b in pieces:
            for i in range(a, b, batch):
                yield read(i, min(i + batch, b))


class InMemory(Dataset):
    """Whole splits held in memory as uint8 NHWC arrays (x_train, y_train, x_test, y_test);
    each global batch is dealt over the group (module doc)."""

    def __init__(self, x_train, y_train, x_test, y_test, x_val=None, y_val=None, **kw):
        kw.setdefault("input_shape", x_train.shape[1:])
        if x_val is None:
            x_val, y_val = x_train[:0], y_train[:0]
        kw.setdefault("val_total", len(x_val))
        super().__init__(**kw)
        self.x_train, self.y_train = x_train, np.asarray(y_train, np.int32)
        self.x_test, self.y_test = x_test, np.asarray(y_test, np.int32)
        self.x_val, self.y_val = x_val, np.asarray(y_val, np.int32)

    def train_pieces(self):
        return [(0, len(self.x_train))]

    def read_train(self, pieces):
        (a, b), = pieces            # one piece, one window: the whole split, no copy
        return self.x_train[a:b], self.y_train[a:b]

    def test_pieces(self):
        return [block(len(self.x_test), self.shard)]

    def val_pieces(self):
        return [block(len(self.x_val), self.shard)]

    def read_val(self, start, stop):
        return self.x_val[start:stop], self.y_val[start:stop]

    def _train_stream(self, seed, steps, batch):
        """One permutation for the whole group (the shard index is not mixed into the seed);
        at G = 1 these are exactly the batches of the streamed mode with one window."""
        index, count = self.shard
        local = batch // count
        _, mix_rng, aug_rng = _seeds(seed, 0)
        perm = mix_rng.permutation(len(self.x_train))
        for i in range(steps):
            idx = np.sort(perm[i * batch:(i + 1) * batch])[index * local:(index + 1) * local]
            xb = self.x_train[idx]
            if self.augment:
                xb = augment_mod.random_crop_flip(xb, aug_rng, self.pad, self.flip, self.shard)
            yield xb, self.y_train[idx]

    def read_test(self, start, stop):
        return self.x_test[start:stop], self.y_test[start:stop]


class Streaming(Dataset):
    """A shard read from the HDF5 file as the epoch goes: one contiguous read per piece."""

    def __init__(self, path, pieces, test_range, val_range=(0, 0), **kw):
        super().__init__(val_total=val_range[1] - val_range[0], **kw)
        self.path = path
        self.file = h5py.File(path, "r")
        self._pieces, self._test_range = pieces, test_range
        self._val_start = val_range[0]      # validation rows are the training split's last

    def train_pieces(self):
        return self._pieces

    def _read(self, split, pieces):
        images, labels = self.file[split]["images"], self.file[split]["labels"]
        n = sum(b - a for a, b in pieces)
        x = np.empty((n,) + self.input_shape, np.uint8)
        y = np.empty(n, np.int32)
        pos = 0
        for a, b in pieces:
            images.read_direct(x, np.s_[a:b], np.s_[pos:pos + b - a])
            y[pos:pos + b - a] = labels[a:b]
            pos += b - a
        return x, y

    def read_train(self, pieces):
        return self._read("train", pieces)

    def test_pieces(self):
        return [self._test_range]

    def read_test(self, start, stop):
        return self._read("test", [(start, stop)])

    def val_pieces(self):
        return [block(self.val_total, self.shard)]

    def read_val(self, start, stop):
        return self._read("train", [(self._val_start + start, self._val_start + stop)])


OPTION_TYPES = {"augment": "bool", "flip": "bool", "pad": "int >= 0 or null",
                "prefetch": "int >= 0", "in_memory": "auto, true or false",
                "shuffle_buffer": "int >= 1", "read_rows": "int >= 1"}


def check_options(options: dict) -> None:
    """Refuse a reader option of the wrong type or range, naming it as a config key."""
    for key, value in options.items():
        is_int = isinstance(value, int) and not isinstance(value, bool)
        ok = {"augment": isinstance(value, bool), "flip": isinstance(value, bool),
              "pad": value is None or (is_int and value >= 0),
              "prefetch": is_int and value >= 0,
              "in_memory": value in ("auto", True, False) and not is_int,
              "shuffle_buffer": is_int and value >= 1,
              "read_rows": is_int and value >= 1}[key]
        if not ok:
            raise ValueError(f"dataset.{key}: expected {OPTION_TYPES[key]}, got {value!r}")


def check_kind(info: dict, path: str, expect) -> None:
    """Refuse a converted file whose image shape or class count is not what the dataset name
    promises (e.g. a CIFAR-100 file given as cifar10)."""
    shape, classes = expect
    if (shape and tuple(info["input_shape"]) != tuple(shape)) or \
            (classes and info["num_classes"] != classes):
        want = " and ".join(filter(None, [shape and "x".join(map(str, shape)),
                                          classes and f"{classes} classes"]))
        raise ValueError(f"dataset.path: {path} holds {info['dataset']} "
                         f"({'x'.join(map(str, info['input_shape']))}, {info['num_classes']} "
                         f"classes), expected {want}")


def open_h5(path: str, shard=(0, 1), train_examples=None, test_examples=None,
            validation_examples=0, *,
            augment=False, pad=None, flip=True, in_memory="auto", shuffle_buffer=8192,
            read_rows=256, prefetch=4, expect=(None, None)) -> Dataset:
    """This rank's shard of a converted dataset (data_prep's HDF5 format).

    The last `validation_examples` rows of the training split are held out for validation;
    train_examples / test_examples keep the first rows of what remains of each split (the
    image-tree converter shuffles the training split; CIFAR and MNIST come shuffled), so both
    are random subsets. expect = (image shape, classes), None for either = any.
    """
    options = dict(augment=augment, pad=pad, flip=flip, prefetch=prefetch,
                   in_memory=in_memory, shuffle_buffer=shuffle_buffer, read_rows=read_rows)
    check_options(options)
    info = h5format.describe(path)
    check_kind(info, path, expect)
    n_all, n_val = info["train_total"], validation_examples
    n_train = held_out(n_all, n_val, train_examples)
    n_test = min(test_examples or info["test_total"], info["test_total"])
    pieces = owned_pieces(n_train, read_rows, shard)
    test_range = block(n_test, shard)
    if in_memory == "auto":   # in memory, a rank holds every split whole
        in_memory = ((n_train + n_val + n_test) * int(np.prod(info["input_shape"]))
                     <= IN_MEMORY_AUTO_BYTES)
    common = dict(num_classes=info["num_classes"], mean=info["mean"], std=info["std"],
                  input_shape=info["input_shape"], train_total=n_train, test_total=n_test,
                  shard=shard, augment=augment, pad=pad, flip=flip, prefetch=prefetch,
                  class_names=info["class_names"])
    stream = Streaming(path, pieces, test_range, (n_all - n_val, n_all),
                       shuffle_buffer=shuffle_buffer, **common)
    if not in_memory:
        return stream
    x_train, y_train = stream.read_train([(0, n_train)])
    x_test, y_test = stream.read_test(0, n_test)
    x_val, y_val = stream.read_val(0, n_val)
    stream.file.close()
    return InMemory(x_train, y_train, x_test, y_test, x_val, y_val, **common)


def held_out(n_all: int, n_val: int, train_examples: int | None) -> int:
    """Training rows left once the last n_val rows are held out for validation (at most
    train_examples of them); refuses a validation split that leaves nothing to train on."""
    if n_val >= n_all:
        raise ValueError(f"dataset.validation_examples: {n_val} leaves no training examples "
                         f"(the training split has {n_all})")
    return min(train_examples or n_all - n_val, n_all - n_val)
