"""Generate Cityscapes-C: every val image under every corruption and severity.

Writes ``DST/<corruption>/<severity>/<city>/<name>_leftImg8bit.png`` for each
``SRC/<city>/<name>_leftImg8bit.png``, so that the Cityscapes-C evaluation
(:mod:`stl_mm.evaluation.robustness.cityscapes_c`) can point mmseg's Cityscapes dataset at any
cell and keep the clean ``gtFine`` labels.

- Deterministic: each output is seeded by
  :func:`~stl_mm.compat.imagecorruptions.corruption_seed` from (relative path, corruption,
  severity, base seed), so a rerun, or a run with a different number of workers, writes the
  same pixels.
- Resumable: outputs already on disk are skipped; every file is written to a temporary name and
  renamed, so an interrupted run never leaves a half-written PNG behind.
- Corruptions are applied to RGB images (imagecorruptions' convention; colour-dependent ones such
  as saturate, frost or spatter would otherwise be wrong) through
  :mod:`stl_mm.compat.imagecorruptions`.
"""
import multiprocessing
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.utils import ProgressBar

from stl_mm.compat.imagecorruptions import corrupt, corruption_seed
from stl_mm.utils import TEMP_PREFIX, write_bytes

__all__ = ['IMAGE_SUFFIX', 'list_images', 'find_images', 'output_path', 'corrupt_image',
           'pending_tasks', 'run_tasks', 'remove_stale_temp_files', 'count_outputs',
           'generate_city_c']

IMAGE_SUFFIX = '_leftImg8bit.png'

#: One unit of work: (relative image path, corruption, severities still to write).
Task = Tuple[str, str, Tuple[int, ...]]


def list_images(folder: Path, suffix: str = IMAGE_SUFFIX) -> List[str]:
    """Relative (posix) paths of the images under ``folder``, sorted."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob('*' + suffix))


def find_images(src: Path) -> List[str]:
    """Relative paths (posix) of every clean image under ``src``, sorted."""
    if not src.is_dir():
        raise SystemExit(f'--src {src} is not a directory; point it at the clean val images, '
                         'e.g. data/cityscapes/leftImg8bit/val')
    images = list_images(src)
    if not images:
        raise SystemExit(f'No *{IMAGE_SUFFIX} files under {src}; --src must be a Cityscapes '
                         'leftImg8bit split folder (<city>/<name>_leftImg8bit.png)')
    return images


def output_path(dst: Path, corruption: str, severity: int, relative_image: str) -> Path:
    """Where the corrupted copy of ``relative_image`` goes (always a PNG)."""
    return dst / corruption / str(severity) / relative_image


def write_png_atomically(path: Path, image_bgr: np.ndarray) -> None:
    """Encode first, write to a temporary file beside ``path``, then rename it into place."""
    ok, encoded = cv2.imencode('.png', image_bgr)
    if not ok:
        raise RuntimeError(f'OpenCV could not encode {path}')
    write_bytes(encoded.tobytes(), str(path))


def corrupt_image(task: Task, src: Path, dst: Path, base_seed: int) -> Optional[str]:
    """Write every missing severity of one corruption of one image.

    Returns:
        None on success, or a message naming the unreadable input.
    """
    relative_image, corruption, severities = task
    image_bgr = cv2.imread(str(src / relative_image), cv2.IMREAD_COLOR)
    if image_bgr is None:
        return f'{src / relative_image}: unreadable image (missing, truncated or not a PNG)'
    image_rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    for severity in severities:
        seed = corruption_seed(base_seed, relative_image, corruption, severity)
        corrupted = corrupt(image_rgb, corruption, severity, seed)
        write_png_atomically(
            output_path(dst, corruption, severity, relative_image),
            cv2.cvtColor(corrupted, cv2.COLOR_RGB2BGR))
    return None


def _worker(job: Tuple[Task, Path, Path, int]) -> Tuple[str, Optional[str]]:
    return job[0][0], corrupt_image(*job)


def pending_tasks(images: Sequence[str], corruptions: Sequence[str],
                  severities: Sequence[int], dst: Path) -> List[Task]:
    """(image, corruption) pairs with at least one severity not yet written."""
    tasks = []
    for corruption in corruptions:
        for relative_image in images:
            missing = tuple(s for s in severities
                            if not output_path(dst, corruption, s, relative_image).is_file())
            if missing:
                tasks.append((relative_image, corruption, missing))
    return tasks


def run_tasks(tasks: Sequence[Task], src: Path, dst: Path, base_seed: int,
              workers: int) -> Dict[str, str]:
    """Run the tasks (in ``workers`` processes when more than one) with a progress bar.

    Returns:
        Unreadable inputs: relative image path -> message.
    """
    if not tasks:
        return {}
    jobs = [(task, src, dst, base_seed) for task in tasks]
    progress = ProgressBar(len(jobs))
    unreadable = {}

    def collect(results: Iterable[Tuple[str, Optional[str]]]) -> None:
        for relative_image, message in results:
            progress.update()
            if message:
                unreadable[relative_image] = message

    if workers == 1:
        collect(map(_worker, jobs))
    else:
        # Workers already run in parallel, so each keeps OpenCV single-threaded. This is set
        # before forking: changing it inside a forked child can hang on the parent's pool.
        opencv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            with multiprocessing.get_context('fork').Pool(workers) as pool:
                collect(pool.imap_unordered(_worker, jobs, chunksize=1))
        finally:
            cv2.setNumThreads(opencv_threads)
    print()
    return unreadable


def remove_stale_temp_files(dst: Path, corruptions: Sequence[str]) -> int:
    """Delete temporary files left by a killed run (only under the corruptions of this run, so
    that runs sharing ``dst`` with other corruptions do not disturb each other)."""
    stale = [path for corruption in corruptions for path in
             (dst / corruption).rglob(TEMP_PREFIX + '*')]
    for path in stale:
        path.unlink()
    return len(stale)


def count_outputs(images: Sequence[str], corruptions: Sequence[str], severities: Sequence[int],
                  dst: Path) -> Dict[str, int]:
    """Per ``corruption/severity`` cell: how many expected outputs are missing (0 = complete)."""
    expected = set(images)
    missing = {}
    for corruption in corruptions:
        for severity in severities:
            found = set(list_images(dst / corruption / str(severity)))
            missing[f'{corruption}/{severity}'] = len(expected - found)
    return missing


def generate_city_c(src: Path, dst: Path, corruptions: Sequence[str], severities: Sequence[int],
                    base_seed: int = 0, workers: int = 1) -> int:
    """Write every missing output; returns 0 when ``dst`` is complete, 1 after errors (named
    on stderr; finished files are kept)."""
    images = find_images(src)
    removed = remove_stale_temp_files(dst, corruptions)
    if removed:
        print(f'Removed {removed} temporary files left by an interrupted run.')
    tasks = pending_tasks(images, corruptions, severities, dst)
    total = len(images) * len(corruptions) * len(severities)
    to_write = sum(len(missing) for _, _, missing in tasks)
    print(f'{len(images)} images x {len(corruptions)} corruptions x '
          f'{len(severities)} severities = {total} outputs; {total - to_write} already '
          f'written, {to_write} to write with {workers} worker(s).')

    unreadable = run_tasks(tasks, src, dst, base_seed, workers)
    for message in sorted(set(unreadable.values())):
        print(f'ERROR {message}', file=sys.stderr)
    readable = [image for image in images if image not in unreadable]
    incomplete = {cell: count for cell, count in
                  count_outputs(readable, corruptions, severities, dst).items() if count}
    for cell, count in incomplete.items():
        print(f'ERROR {dst / cell}: {count} of {len(readable)} images missing', file=sys.stderr)
    if unreadable or incomplete:
        print(f'Finished with errors: {len(unreadable)} unreadable input(s), {len(incomplete)} '
              'incomplete cell(s). Fix or remove the inputs named above and rerun; finished '
              'files are kept.', file=sys.stderr)
        return 1
    print(f'Done: {dst} holds all {total} outputs.')
    return 0
