"""Where a CPU training process's peak RSS goes (``bench/peft_memory.py --breakdown``), with glibc.

* ``saved_for_backward_mb``: what autograd keeps from one forward for backward (activations,
  dropout masks, merged weights, ...), each storage counted once, parameters left out, grouped by
  the line of Python that saved it (``saved_by_source``, lines inside torch's C++ ops are named by
  the last Python line above them); read with ``saved_tensors_hooks``.
* A thread samples, every 2 ms during the training steps, ``/proc/self/statm`` and glibc's
  ``mallinfo2`` (in-use heap chunks + mmapped chunks: what the tensors, and the rest of the
  process's malloc calls, held at that moment):

  - ``malloc_in_use_peak_mb``: the most held through malloc at once;
  - ``at_rss_peak``: at the sample with the highest RSS, its parts: ``file_mb`` (file-backed and
    shared pages: shared libraries, memory-mapped checkpoint weights), ``malloc_in_use_mb``, and
    ``other_anon_mb``, the rest: freed memory glibc still holds (the allocator's high-water and
    fragmentation), Python's own arenas, and mmapped checkpoint pages that were written to (full
    fine-tuning updates the weights in place, so their pages become private copies).
  - ``at_start``: the same parts before the first step (after setup and ``malloc_trim``), so
    ``other_anon_mb`` at the peak less at the start is what the steps left with the allocator.

* ``heap_free_end_mb``: freed heap memory glibc still holds after the last step.
"""

import contextlib
import ctypes
import os
import threading
import traceback
from pathlib import Path

MB = 2**-20
_PAGE = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def _statm() -> tuple[int, int]:
    """(resident, file-backed + shared) bytes."""
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * _PAGE, int(fields[2]) * _PAGE


class Breakdown:
    def __init__(self, model):
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.params |= {b.untyped_storage().data_ptr() for b in model.buffers()}
        self.saved, self.peak, self.at_peak = {}, 0, (0, 0, 0)
        self.stop = threading.Event()
        try:
            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallinfo2.restype = _MallInfo2
        except (OSError, AttributeError):  # not glibc >= 2.33
            self.libc = None
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def start(self):
        if self.libc is not None:
            self.at_start = self._parts(*_statm(), self._in_use())
            self.thread.start()

    def _in_use(self) -> int:
        m = self.libc.mallinfo2()
        return m.uordblks + m.hblkhd

    def _sample(self):
        while not self.stop.wait(0.002):
            in_use = self._in_use()
            rss, file = _statm()
            self.peak = max(self.peak, in_use)
            if rss > self.at_peak[0]:
                self.at_peak = (rss, file, in_use)

    @contextlib.contextmanager
    def saved_tensors(self):
        import torch

        def pack(t):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in self.params and ptr not in self.saved:
                where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(traceback.extract_stack()[:-1])
                              if "/torch/" not in f.filename or "/torch/nn/functional" in f.filename), "?")
                self.saved[ptr] = (t.untyped_storage().nbytes(), where)
            return t

        pack.keeps_tensors = True  # returns the tensor itself: minirec.modeling.lean may read it again
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield

    @staticmethod
    def _parts(rss, file, in_use) -> dict:
        return {"rss_mb": round(rss * MB), "file_mb": round(file * MB), "malloc_in_use_mb": round(in_use * MB),
                "other_anon_mb": round((rss - file - in_use) * MB)}

    def report(self) -> dict:
        self.stop.set()
        by_source = {}
        for nbytes, where in self.saved.values():
            by_source[where] = by_source.get(where, 0) + nbytes
        out = {"saved_for_backward_mb": round(sum(by_source.values()) * MB),
               "saved_by_source": {k: round(v * MB) for k, v in sorted(by_source.items(), key=lambda kv: -kv[1])
                                   if v * MB >= 1}}
        if self.libc is not None:
            self.thread.join()
            out["malloc_in_use_peak_mb"] = round(self.peak * MB)
            out["at_start"], out["at_rss_peak"] = self.at_start, self._parts(*self.at_peak)
            out["heap_free_end_mb"] = round(self.libc.mallinfo2().fordblks * MB)
        out["rss_file_end_mb"] = round(_statm()[1] * MB)
        return out
