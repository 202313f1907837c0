"""Generate Cityscapes-C: every val image under every corruption and severity.

Writes ``DST/<corruption>/<severity>/<city>/<name>_leftImg8bit.png`` for each
``SRC/<city>/<name>_leftImg8bit.png``, so that ``tools/test_city_c.py`` can point mmseg's
Cityscapes dataset at any cell and keep the clean ``gtFine`` labels.

- Deterministic: each output is seeded from a stable hash of (relative path, corruption, severity,
  ``--seed``), so a rerun, or a run with a different number of workers, writes the same pixels.
- Resumable: outputs already on disk are skipped; every file is written to a temporary name and
  renamed, so an interrupted run never leaves a half-written PNG behind.
- Corruptions are applied to RGB images (imagecorruptions' convention; colour-dependent ones such
  as saturate, frost or spatter would otherwise be wrong) through
  :mod:`stl_mm.compat.imagecorruptions`, which makes all 19 work with numpy 2 and
  scikit-image 0.26.

Example:
    python tools/gen_city_c.py --src data/cityscapes/leftImg8bit/val \
        --dst data/cityscapes-c --workers 16
"""
import argparse
import hashlib
import multiprocessing
import os
import os.path as osp
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.utils import ProgressBar

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from stl_mm.compat.imagecorruptions import ALL_CORRUPTIONS, corrupt  # noqa: E402

SEVERITIES = (1, 2, 3, 4, 5)
IMAGE_SUFFIX = '_leftImg8bit.png'
TEMP_PREFIX = '.tmp-'

#: One unit of work: (relative image path, corruption, severities still to write).
Task = Tuple[str, str, Tuple[int, ...]]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--src', default='data/cityscapes/leftImg8bit/val',
                        help='clean images, searched recursively for *' + IMAGE_SUFFIX)
    parser.add_argument('--dst', default='data/cityscapes-c', help='output root')
    parser.add_argument('--corruptions', nargs='+', default=list(ALL_CORRUPTIONS),
                        choices=ALL_CORRUPTIONS, metavar='NAME',
                        help='corruptions to apply (default: the 15 benchmark ones plus '
                        'speckle_noise, gaussian_blur, spatter and saturate)')
    parser.add_argument('--severities', nargs='+', type=int, default=list(SEVERITIES),
                        choices=SEVERITIES, metavar='S', help='severities, 1 to 5')
    parser.add_argument('--workers', type=int, default=os.cpu_count() or 1,
                        help='worker processes (default: all CPU cores)')
    parser.add_argument('--seed', type=int, default=0,
                        help='base seed, mixed into every per-image seed')
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f'--workers must be at least 1, got {args.workers}')
    args.corruptions = list(dict.fromkeys(args.corruptions))
    args.severities = sorted(set(args.severities))
    return args


def find_images(src: Path) -> List[str]:
    """Relative paths (posix) of every clean image under ``src``, sorted."""
    if not src.is_dir():
        raise SystemExit(f'--src {src} is not a directory; point it at the clean val images, '
                         'e.g. data/cityscapes/leftImg8bit/val')
    images = sorted(path.relative_to(src).as_posix() for path in src.rglob('*' + IMAGE_SUFFIX))
    if not images:
        raise SystemExit(f'No *{IMAGE_SUFFIX} files under {src}; --src must be a Cityscapes '
                         'leftImg8bit split folder (<city>/<name>_leftImg8bit.png)')
    return images


def output_path(dst: Path, corruption: str, severity: int, relative_image: str) -> Path:
    """Where the corrupted copy of ``relative_image`` goes (always a PNG)."""
    return dst / corruption / str(severity) / relative_image


def image_seed(relative_image: str, corruption: str, severity: int, base_seed: int) -> int:
    """A seed that depends only on its arguments (Python's ``hash`` is salted per process)."""
    key = f'{relative_image}|{corruption}|{severity}|{base_seed}'.encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], 'little')


def write_png_atomically(path: Path, image_bgr: np.ndarray) -> None:
    """Encode first, write to a temporary file beside ``path``, then rename it into place."""
    ok, encoded = cv2.imencode('.png', image_bgr)
    if not ok:
        raise RuntimeError(f'OpenCV could not encode {path}')
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix='.png', dir=path.parent)
    try:
        with os.fdopen(handle, 'wb') as temp_file:
            temp_file.write(encoded.tobytes())
        os.replace(temp_name, path)
    except BaseException:
        if osp.exists(temp_name):
            os.remove(temp_name)
        raise


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
        seed = image_seed(relative_image, corruption, severity, base_seed)
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
            cell = dst / corruption / str(severity)
            found = {path.relative_to(cell).as_posix() for path in cell.rglob('*' + IMAGE_SUFFIX)}
            missing[f'{corruption}/{severity}'] = len(expected - found)
    return missing


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    images = find_images(src)
    removed = remove_stale_temp_files(dst, args.corruptions)
    if removed:
        print(f'Removed {removed} temporary files left by an interrupted run.')
    tasks = pending_tasks(images, args.corruptions, args.severities, dst)
    total = len(images) * len(args.corruptions) * len(args.severities)
    to_write = sum(len(severities) for _, _, severities in tasks)
    print(f'{len(images)} images x {len(args.corruptions)} corruptions x '
          f'{len(args.severities)} severities = {total} outputs; {total - to_write} already '
          f'written, {to_write} to write with {args.workers} worker(s).')

    unreadable = run_tasks(tasks, src, dst, args.seed, args.workers)
    for message in sorted(set(unreadable.values())):
        print(f'ERROR {message}', file=sys.stderr)
    readable = [image for image in images if image not in unreadable]
    incomplete = {cell: count for cell, count in
                  count_outputs(readable, args.corruptions, args.severities, dst).items() if count}
    for cell, count in incomplete.items():
        print(f'ERROR {dst / cell}: {count} of {len(readable)} images missing', file=sys.stderr)
    if unreadable or incomplete:
        print(f'Finished with errors: {len(unreadable)} unreadable input(s), {len(incomplete)} '
              'incomplete cell(s). Fix or remove the inputs named above and rerun; finished '
              'files are kept.', file=sys.stderr)
        return 1
    print(f'Done: {dst} holds all {total} outputs.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
